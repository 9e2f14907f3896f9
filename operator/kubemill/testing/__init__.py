"""Test doubles that ship with kubemill (as `kopf.testing` does): `kubeapi.FakeKube`, an in-memory API server
for unit tests of the reconcilers. Nothing in the operator imports this package."""
