"""Kubernetes side of kubemill: pure builders of the objects a run needs (`builders`) and the one module
that talks to the API server (`client`). Handlers (`kubemill.operator`) build with one, act with the other.
"""
