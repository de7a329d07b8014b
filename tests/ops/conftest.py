from tests.kube_fixtures import kube

__all__ = ["kube"]
