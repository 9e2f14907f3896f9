"""Typed models of every kubemill resource: the single source of truth the CRDs are generated from.

`openflow` holds Windmill's OpenFlow document (snake_case); the other modules hold the Kubernetes resources
(camelCase). Nothing here imports kopf or kubernetes.
"""
