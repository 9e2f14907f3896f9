"""kubemill: Windmill's scripts, flows, schedules and approvals as Kubernetes custom resources."""

__version__ = "0.1.0"
