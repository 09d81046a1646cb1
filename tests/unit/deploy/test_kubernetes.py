"""The Kubernetes manifests (deploy/k8s) are valid and run each service as its settings expect."""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from nats.js.api import StorageType
from pydantic_settings import BaseSettings

from services.gateway.api_keys import parse_keys_file
from shared.config import Settings
from shared.nats_auth import DESTRUCTIVE, USERS, connect_options, permissions
from shared.subjects import DURABLES, EVENTS_STREAM, RATELIMIT, RECORDERS, UPLOADER
from tests.unit.deploy.helpers import (
    GATEWAY_PORT,
    K8S,
    K8S_VERSION,
    METRICS_PORT,
    MIN_NATS,
    SERVICE_UID,
    SERVICES,
    SETTINGS,
    all_env_names,
    env_names,
    version_of,
)
from tlr.nats_auth import make_tls


@cache
def manifests() -> dict[str, list[dict[str, Any]]]:
    found = {}
    for path in sorted(K8S.glob("*.yaml")):
        if path.name != "kustomization.yaml":
            docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
            assert docs, path
            found[path.name] = docs
    return found


def objects(kind: str) -> dict[str, dict[str, Any]]:
    return {
        doc["metadata"]["name"]: doc
        for docs in manifests().values()
        for doc in docs
        if doc["kind"] == kind
    }


def container(deployment: str) -> dict[str, Any]:
    (only,) = objects("Deployment")[deployment]["spec"]["template"]["spec"]["containers"]
    assert isinstance(only, dict)
    return only


def pod_spec(deployment: str) -> dict[str, Any]:
    spec = objects("Deployment")[deployment]["spec"]["template"]["spec"]
    assert isinstance(spec, dict)
    return spec


def configmap() -> dict[str, str]:
    data = objects("ConfigMap")["tlr-config"]["data"]
    assert isinstance(data, dict)
    return data


def secret_keys() -> set[str]:
    return set(objects("Secret")["tlr-secrets"]["stringData"])


def pod_env(deployment: str) -> dict[str, str | None]:
    """What a service sees: the ConfigMap (envFrom), then its own env (value or None)."""
    ctr = container(deployment)
    env: dict[str, str | None] = {}
    for source in ctr.get("envFrom", []):
        assert source["configMapRef"]["name"] in objects("ConfigMap")
        env.update(configmap())
    for var in ctr.get("env", []):
        env[var["name"]] = var.get("value")
    return env


def container_port(deployment: str, port: str | int) -> int:
    if isinstance(port, int):
        return port
    (number,) = [p["containerPort"] for p in container(deployment)["ports"] if p["name"] == port]
    assert isinstance(number, int)
    return number


def test_kustomization_lists_every_manifest_and_nothing_else() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted(manifests())
    assert kustomization["namespace"] == "tlr"
    assert [image["name"] for image in kustomization["images"]] == ["tlr"]


def test_builtin_kinds_are_valid_kubernetes_objects() -> None:
    for name, docs in manifests().items():
        for doc in docs:
            if doc["apiVersion"].startswith("keda.sh/"):
                continue
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
            assert doc["kind"] == "Namespace" or doc["metadata"]["namespace"] == "tlr", name


def test_a_deployment_per_service_runs_its_module() -> None:
    assert set(objects("Deployment")) == set(SERVICES)
    for name in SERVICES:
        ctr = container(name)
        assert ctr["command"] == ["python", "-m", f"services.{name}"]
        assert ctr["image"].split(":")[0] == "tlr"


@pytest.mark.parametrize("name", SERVICES)
def test_probes_and_ports(name: str) -> None:
    ctr = container(name)
    liveness, readiness = ctr["livenessProbe"]["httpGet"], ctr["readinessProbe"]["httpGet"]
    assert liveness["path"] == "/healthz"
    assert readiness["path"] == "/ready"
    port = GATEWAY_PORT if name == "gateway" else METRICS_PORT
    assert container_port(name, liveness["port"]) == port
    assert container_port(name, readiness["port"]) == port
    if name == "gateway":
        assert int(str(pod_env(name)["GATEWAY_PORT"])) == port
    else:
        assert liveness["port"] == "metrics"
        assert int(str(pod_env(name)["METRICS_PORT"])) == port
    annotations = objects("Deployment")[name]["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(port)
    assert annotations["prometheus.io/path"] == "/metrics"


@pytest.mark.parametrize("name", SERVICES)
def test_each_service_has_a_service_on_its_metrics_port(name: str) -> None:
    svc = objects("Service")[name]
    labels = objects("Deployment")[name]["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= labels.items()
    ports = {p["name"]: p for p in svc["spec"]["ports"]}
    wanted = "http" if name == "gateway" else "metrics"
    assert container_port(name, ports[wanted]["targetPort"]) == ports[wanted]["port"]


@pytest.mark.parametrize("name", SERVICES)
def test_pods_run_as_the_image_user_without_privileges(name: str) -> None:
    pod = pod_spec(name)["securityContext"]
    assert pod["runAsNonRoot"] is True
    assert pod["runAsUser"] == SERVICE_UID
    ctr = container(name)["securityContext"]
    assert ctr["allowPrivilegeEscalation"] is False
    assert ctr["readOnlyRootFilesystem"] is True
    assert ctr["capabilities"]["drop"] == ["ALL"]
    resources = container(name)["resources"]
    assert {"cpu", "memory"} <= set(resources["requests"])
    assert "memory" in resources["limits"]


@pytest.mark.parametrize("name", SERVICES)
def test_pods_get_only_real_settings(name: str) -> None:
    assert set(pod_env(name)) - env_names(name) <= set(configmap())
    for var in container(name).get("env", []):
        ref = var.get("valueFrom", {}).get("secretKeyRef")
        if ref:
            assert ref["name"] == "tlr-secrets"
            assert ref["key"] in secret_keys()
        assert var["name"] in env_names(name), f"{name} would ignore {var['name']}"


def test_configmap_and_secret_hold_only_settings() -> None:
    assert set(configmap()) - all_env_names() == set()
    assert secret_keys() - all_env_names() == set()
    assert {"SECRET_KEY", "API_KEYS", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= secret_keys()


def test_configmap_values_are_accepted_by_every_service(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for key in list(os.environ):
        if key in all_env_names():
            monkeypatch.delenv(key)
    ca, _, _ = make_tls(tmp_path, ["nats.nats.svc.cluster.local"])  # what /run/nats holds
    for key, value in configmap().items():
        monkeypatch.setenv(key, value.replace("/run/nats/ca.crt", str(ca)))
    for settings_type in SETTINGS.values():
        settings: BaseSettings = settings_type()
        assert isinstance(settings, Settings)
        assert settings.nats_replicas == 3


def volume_claims(name: str) -> dict[str, str]:
    """mountPath -> PVC name of a Deployment."""
    claims = {
        v["name"]: v["persistentVolumeClaim"]["claimName"]
        for v in pod_spec(name).get("volumes", [])
        if "persistentVolumeClaim" in v
    }
    return {
        m["mountPath"]: claims[m["name"]]
        for m in container(name).get("volumeMounts", [])
        if m["name"] in claims
    }


def test_recordings_are_one_read_write_many_claim_shared_by_three_services() -> None:
    pvcs = objects("PersistentVolumeClaim")
    for name in ("recorder", "uploader", "indexer"):
        recordings = str(pod_env(name)["RECORDINGS_DIR"])
        assert volume_claims(name)[recordings] == "recordings", name
    assert pvcs["recordings"]["spec"]["accessModes"] == ["ReadWriteMany"]


@pytest.mark.parametrize(
    ("name", "variable", "claim"),
    [("indexer", "INDEX_DB", "indexer-state"), ("scheduler", "SCHEDULER_DB", "scheduler-state")],
)
def test_sqlite_state_is_on_its_own_read_write_once_claim(
    name: str, variable: str, claim: str
) -> None:
    folder = str(Path(str(pod_env(name)[variable])).parent)
    assert volume_claims(name)[folder] == claim
    assert objects("PersistentVolumeClaim")[claim]["spec"]["accessModes"] == ["ReadWriteOnce"]


def test_replicas_and_strategies_follow_who_owns_what() -> None:
    deployments = objects("Deployment")
    # A leader and a standby each; they share a ReadWriteOnce SQLite volume, so one node.
    for name in ("indexer", "scheduler"):
        assert deployments[name]["spec"]["replicas"] == 2, name
        affinity = pod_spec(name)["affinity"]["podAffinity"]
        (term,) = affinity["requiredDuringSchedulingIgnoredDuringExecution"]
        assert term["topologyKey"] == "kubernetes.io/hostname"
        assert term["labelSelector"]["matchLabels"]["app.kubernetes.io/name"] == name
    # Replica counts owned by an autoscaler are not in the Deployment (apply would reset them).
    for name in ("gateway", "recorder", "uploader"):
        assert "replicas" not in deployments[name]["spec"], name


def test_recorder_gets_time_to_finalize_its_segments() -> None:
    assert pod_spec("recorder")["terminationGracePeriodSeconds"] >= 60
    for name in SERVICES:
        assert pod_spec(name)["terminationGracePeriodSeconds"] >= 30


def test_gateway_scales_on_cpu_from_two_replicas() -> None:
    hpa = objects("HorizontalPodAutoscaler")["gateway"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "gateway",
    }
    assert hpa["spec"]["minReplicas"] == 2
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"


SCALED_OBJECT_SPEC = {
    "scaleTargetRef",
    "pollingInterval",
    "cooldownPeriod",
    "initialCooldownPeriod",
    "idleReplicaCount",
    "minReplicaCount",
    "maxReplicaCount",
    "fallback",
    "advanced",
    "triggers",
}
JETSTREAM_METADATA = {
    "natsServerMonitoringEndpoint",
    "account",
    "stream",
    "consumer",
    "lagThreshold",
    "activationLagThreshold",
    "useHttps",
}


def test_keda_scales_recorders_and_uploaders_on_their_durables() -> None:
    scaled = objects("ScaledObject")
    assert set(scaled) == {"recorder", "uploader"}
    durables = {d.name for d in DURABLES if d.stream == EVENTS_STREAM}
    nats_host = configmap()["NATS_URL"].split("://", 1)[1].rsplit(":", 1)[0]
    consumers = {}
    for name, obj in scaled.items():
        assert obj["apiVersion"] == "keda.sh/v1alpha1"
        spec = obj["spec"]
        assert set(spec) <= SCALED_OBJECT_SPEC
        assert spec["scaleTargetRef"]["name"] in objects("Deployment")
        assert 1 <= spec["minReplicaCount"] < spec["maxReplicaCount"]
        # KEDA's behaviour block is an HPA's: check it with the HPA schema.
        behavior = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
        hpa = {
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": name},
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
                "maxReplicas": spec["maxReplicaCount"],
                "behavior": behavior,
            },
        }
        kubernetes_validate.validate(hpa, K8S_VERSION, strict=True)
        (trigger,) = spec["triggers"]
        assert trigger["type"] == "nats-jetstream"
        meta = trigger["metadata"]
        assert set(meta) == JETSTREAM_METADATA
        assert all(isinstance(v, str) for v in meta.values()), "KEDA metadata is strings only"
        # The headless service of the NATS chart: KEDA must reach every server to find the
        # consumer's leader (KEDA PR #5358, issue #7322), which the ClusterIP service hides.
        service_name, namespace = nats_host.split(".")[:2]
        headless = f"{service_name}-headless.{namespace}.svc.cluster.local:8222"
        assert meta["natsServerMonitoringEndpoint"] == headless
        assert meta["account"] == "$G"
        assert meta["stream"] == EVENTS_STREAM
        assert meta["consumer"] in durables
        assert meta["useHttps"] == "false"
        assert int(meta["lagThreshold"]) >= 1
        assert int(meta["activationLagThreshold"]) >= 0
        consumers[meta["consumer"]] = (spec["scaleTargetRef"]["name"], int(meta["lagThreshold"]))
    assert consumers[RECORDERS.name][0] == "recorder"
    assert consumers[UPLOADER.name][0] == "uploader"
    # A recorder holds a message per recording: the target must leave free slots per pod.
    assert consumers[RECORDERS.name][1] < int(configmap()["MAX_RECORDINGS"])
    assert consumers[UPLOADER.name][1] >= int(configmap()["UPLOAD_CONCURRENCY"])


def test_recorder_scale_down_is_slow() -> None:
    spec = objects("ScaledObject")["recorder"]["spec"]
    down = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"]
    assert down["stabilizationWindowSeconds"] >= 600
    assert spec["minReplicaCount"] >= 2


def test_nats_helm_values_match_the_cluster_the_services_expect() -> None:
    values = yaml.safe_load((K8S / "helm" / "nats-values.yaml").read_text())
    config = values["config"]
    assert config["jetstream"]["enabled"] is True
    assert config["cluster"]["enabled"] is True
    assert config["cluster"]["replicas"] == int(configmap()["NATS_REPLICAS"]) == 3
    if RATELIMIT.storage == StorageType.MEMORY:
        assert config["jetstream"]["memoryStore"]["enabled"] is True
    assert config["monitor"]["port"] == 8222
    assert values["service"]["ports"]["monitor"]["enabled"] is True
    assert version_of(f"nats:{values['container']['image']['tag']}")[:2] >= MIN_NATS
    assert "nats.nats.svc.cluster.local:4222" in configmap()["NATS_URL"]
    # TLS with the Secret nats-tls; one user per service, generated from shared/nats_auth.py.
    assert config["nats"]["tls"] == {"enabled": True, "secretName": "nats-tls"}
    users = config["merge"]["authorization"]["users"]
    assert [u["user"] for u in users] == list(USERS)
    env = values["container"]["env"]
    for entry in users:
        variable = f"NATS_{entry['user'].upper()}_PASSWORD"
        assert entry["password"] == f"<< ${variable} >>"
        allowed = permissions(entry["user"])
        assert entry.get("permissions") == (None if allowed is None else allowed.as_dict())
        assert env[variable]["valueFrom"]["secretKeyRef"] == {
            "name": "nats-users",
            "key": entry["user"],
        }


def _nats_credentials(spec: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(kind, name, key) of each source of the pod's nats-credentials volume."""
    (volume,) = [v for v in spec["volumes"] if v["name"] == "nats-credentials"]
    found = []
    for source in volume["projected"]["sources"]:
        ((kind, ref),) = source.items()
        found += [(kind, ref["name"], item["key"]) for item in ref["items"]]
    return found


@pytest.mark.parametrize("name", SERVICES)
def test_each_pod_gets_only_its_own_nats_user_and_tls(name: str) -> None:
    env = pod_env(name)
    assert env["NATS_USER"] == name
    assert env["NATS_PASSWORD_FILE"] == "/run/nats/password"
    assert "NATS_PASSWORD" not in env
    assert str(env["NATS_URL"]).startswith("tls://")
    assert env["NATS_TLS_CA"] == "/run/nats/ca.crt"
    assert env["NATS_PROVISION"] == "false"
    assert _nats_credentials(pod_spec(name)) == [
        ("secret", "nats-users", name),
        ("configMap", "nats-ca", "ca.crt"),
    ]
    mounts = {m["name"]: m for m in container(name)["volumeMounts"]}
    assert mounts["nats-credentials"] == {
        "name": "nats-credentials",
        "mountPath": "/run/nats",
        "readOnly": True,
    }
    users = objects("Secret")["nats-users"]["stringData"]
    assert name in users


def test_a_job_provisions_as_the_provisioner() -> None:
    job = objects("Job")["nats-provision"]
    spec = job["spec"]["template"]["spec"]
    (ctr,) = spec["containers"]
    assert ctr["command"] == ["python", "-m", "tlr.nats_auth", "provision"]
    env = {e["name"]: e.get("value") for e in ctr["env"]}
    assert env["NATS_USER"] == "provisioner"
    assert _nats_credentials(spec)[0] == ("secret", "nats-users", "provisioner")
    assert "operator" not in objects("Secret")["nats-users"]["stringData"]  # the servers' only


def test_tls_settings_of_the_pods_build_a_client_context(tmp_path: Path) -> None:
    ca, _, _ = make_tls(tmp_path, ["nats.nats.svc.cluster.local"])
    settings = Settings(nats_url=configmap()["NATS_URL"], nats_tls_ca=ca)
    assert connect_options(settings).tls is True


def network_policy() -> dict[str, Any]:
    doc = yaml.safe_load((K8S / "nats" / "network-policy.yaml").read_text())
    assert isinstance(doc, dict)
    return doc


def test_only_the_services_and_nats_itself_reach_the_nats_client_port() -> None:
    policy = network_policy()
    kubernetes_validate.validate(policy, K8S_VERSION, strict=True)
    assert policy["metadata"]["namespace"] == "nats"
    spec = policy["spec"]
    assert spec["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": "nats"}}
    assert spec["policyTypes"] == ["Ingress"]
    rules = spec["ingress"]
    assert all(rule.get("from") for rule in rules), "a rule without from admits everyone"
    by_port: dict[int, list[dict[str, Any]]] = {}
    for rule in rules:
        for port in rule["ports"]:
            by_port.setdefault(port["port"], []).extend(rule["from"])
    tlr_pods = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "tlr"}},
        "podSelector": {"matchLabels": {"app.kubernetes.io/part-of": "tlr"}},
    }
    nats_pods = {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "nats"}}}
    assert by_port[4222] == [tlr_pods, nats_pods]
    assert by_port[6222] == [nats_pods]  # cluster routes: the servers only
    assert tlr_pods not in by_port[8222]  # monitoring: NATS, KEDA and Prometheus only
    # Every pod that needs NATS carries the label the policy admits.
    for name in SERVICES:
        labels = objects("Deployment")[name]["spec"]["template"]["metadata"]["labels"]
        assert labels["app.kubernetes.io/part-of"] == "tlr"
    job = objects("Job")["nats-provision"]["spec"]["template"]["metadata"]["labels"]
    assert job["app.kubernetes.io/part-of"] == "tlr"
    # The policy's namespace selector matches the namespace the kustomization deploys into.
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert kustomization["namespace"] == "tlr"


def test_no_service_user_may_purge_or_delete() -> None:
    for name in SERVICES:
        allowed = permissions(name)
        assert allowed is not None
        assert set(DESTRUCTIVE) <= set(allowed.publish_deny)
        assert not any("PURGE" in s or "DELETE" in s for s in allowed.publish_allow)


def test_the_runbook_and_the_manifests_agree_about_the_indexer_standby() -> None:
    indexer = objects("Deployment")["indexer"]["spec"]
    assert indexer["replicas"] == 2
    assert indexer["strategy"]["rollingUpdate"] == {"maxUnavailable": 1, "maxSurge": 0}
    runbook = (K8S.parents[1] / "docs" / "runbook.md").read_text()
    assert "never\ntwo at once" not in runbook
    assert "never two at once" not in runbook
    assert "`deploy/k8s` runs two" in runbook
    assert "(`maxSurge: 0`, `maxUnavailable: 1`)" in runbook
    readme = (K8S / "README.md").read_text()
    assert "a leader and a standby" in readme


# --- API keys and secret files ------------------------------------------------------------------


def test_the_gateway_reads_api_keys_file_from_a_read_only_secret() -> None:
    env = pod_env("gateway")
    refs = {v["name"]: v.get("valueFrom", {}) for v in container("gateway")["env"]}
    assert refs["API_KEYS"]["secretKeyRef"] == {"name": "tlr-secrets", "key": "API_KEYS"}
    path = Path(str(env["API_KEYS_FILE"]))
    mounts = [m for m in container("gateway")["volumeMounts"] if m["mountPath"] == str(path.parent)]
    (mount,) = mounts
    assert mount["readOnly"] is True
    assert "subPath" not in mount  # a subPath mount never sees the Secret change
    (volume,) = [v for v in pod_spec("gateway")["volumes"] if v["name"] == mount["name"]]
    source = volume["secret"]
    assert source["secretName"] == "tlr-api-keys"
    assert source.get("optional") is not True  # no file: the pod waits, visibly
    (item,) = source["items"]
    assert item["path"] == path.name
    content = objects("Secret")["tlr-api-keys"]["stringData"][item["key"]]
    # As committed: no key at all (a placeholder key would be a published one).
    assert parse_keys_file(content) == []
    # No other pod gets the keys.
    for name in SERVICES:
        volumes = pod_spec(name).get("volumes", [])
        used = {v.get("secret", {}).get("secretName") for v in volumes}
        assert name == "gateway" or "tlr-api-keys" not in used, name
        assert name == "gateway" or "API_KEYS_FILE" not in pod_env(name), name


def _pod_specs() -> dict[str, dict[str, Any]]:
    specs = {name: pod_spec(name) for name in SERVICES}
    specs["nats-provision"] = objects("Job")["nats-provision"]["spec"]["template"]["spec"]
    return specs


def _secret_modes(spec: dict[str, Any]) -> list[int]:
    """The mode of each Secret file a pod mounts (the volume's default unless an item has one)."""
    modes = []
    for volume in spec.get("volumes", []):
        if "secret" in volume:
            source, refs = volume["secret"], [volume["secret"]]
        elif "projected" in volume:
            source = volume["projected"]
            refs = [p["secret"] for p in source["sources"] if "secret" in p]
        else:
            continue
        default = source.get("defaultMode", 0o644)
        modes += [item.get("mode", default) for ref in refs for item in ref.get("items", [{}])]
    return modes


@pytest.mark.parametrize("name", [*SERVICES, "nats-provision"])
def test_pods_can_read_the_secret_files_they_mount(name: str) -> None:
    """Secret files belong to root: uid 10001 reads one that is not world-readable (0400) only
    through fsGroup, which makes it 0440 in that group. Without it NATS_PASSWORD_FILE and
    API_KEYS_FILE are unreadable and the service cannot start."""
    spec = _pod_specs()[name]
    context = spec["securityContext"]
    assert context["runAsUser"] == SERVICE_UID
    modes = _secret_modes(spec)
    assert modes, f"{name} mounts no secret file (its NATS password?)"
    for mode in modes:
        if not mode & 0o004:
            assert context.get("fsGroup") == SERVICE_UID, f"{name}: a {mode:o} file is unreadable"
            assert context["runAsGroup"] == SERVICE_UID
