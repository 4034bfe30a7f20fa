"""The Helm chart (charts/kubepbx) and the image recipe (Dockerfile), checked without a cluster.

Every mode is rendered with the Helm SDK (helm-python-sdk), linted strictly, and each rendered
manifest is validated against the Kubernetes API schemas of two supported versions
(kubernetes-validate, strict: unknown fields fail). Then the essentials are asserted: the SIP
LoadBalancer, non-root containers, the CRD, least-privilege RBAC as docs/operator.md lists it,
the Ingress routes, that every KUBEPBX_* variable the chart sets is a flag of the binary, and
that bad values fail with a message naming the value.

Run: python tests/chart/test_chart.py (the kubepbx binary is taken from KUBEPBX_BIN, else
$CARGO_TARGET_DIR/debug/kubepbx).
"""

from __future__ import annotations

import base64
import os
import re
import subprocess
import unittest
from pathlib import Path

import helm_python as helm
import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "kubepbx"
RELEASE = "pbx"
NAMESPACE = "telephony"
# The oldest and the newest Kubernetes minor the chart is validated against.
KUBE_VERSIONS = ["1.30.0", "1.34.0"]
# Kinds outside the Kubernetes API schemas (CRDs of other projects), checked by hand below.
FOREIGN_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}
CLUSTER_KINDS = {"CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding"}

MODES: dict[str, dict] = {
    "default": {},
    "hostNetwork media": {
        "media": {"mode": "hostNetwork"},
        "networkPolicy": {"nodeCIDRs": ["10.0.0.0/16"]},
    },
    "LoadBalancer media": {
        "media": {
            "mode": "loadBalancer",
            "replicas": 3,
            "addresses": ["203.0.113.10", "203.0.113.11"],
            "rtpPorts": {"first": 30000, "last": 30039},
        },
        "registrar": {"advertise": "sip.example.net"},
    },
    "external etcd": {
        "etcd": {
            "bundled": {"enabled": False},
            "external": {
                "endpoints": ["https://etcd-0.db:2379", "https://etcd-1.db:2379"],
                "tls": {"secretName": "etcd-client"},
            },
        },
        "operator": {"scope": "namespace"},
    },
    "TLS on": {
        "domain": "pbx.example.net",
        "sip": {"tls": {"enabled": True, "secretName": "sip-tls"}},
        "ingress": {
            "className": "nginx",
            "host": "pbx.example.net",
            "tls": {"enabled": True},
            "certManager": {"clusterIssuer": "letsencrypt"},
        },
        "recordings": {"enabled": True, "storageClass": "nfs"},
        "serviceMonitor": {"enabled": True},
        "adminToken": {"value": "0123456789abcdef0123"},
    },
    "Ingress off": {
        "ingress": {"enabled": False},
        "operator": {"enabled": False},
        "networkPolicy": {"enabled": False},
        "registrar": {"autoscaling": {"enabled": False}, "podDisruptionBudget": {"enabled": False}},
    },
}


def render_files(values: dict) -> dict[str, str]:
    """Template path → rendered text for one release."""
    chart = helm.Chart.load(CHART)
    return chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)


def render(values: dict) -> list[dict]:
    """The manifests of one release, as parsed documents (NOTES.txt left out)."""
    docs = []
    for path, text in sorted(render_files(values).items()):
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                doc.setdefault("_template", path)
                docs.append(doc)
    return docs


def notes(values: dict) -> str:
    return next(text for path, text in render_files(values).items() if path.endswith("NOTES.txt"))


def strip(doc: dict) -> dict:
    doc = dict(doc)
    doc.pop("_template", None)
    return doc


def find(docs: list[dict], kind: str, name: str | None = None) -> list[dict]:
    return [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]


def one(docs: list[dict], kind: str, name: str) -> dict:
    found = find(docs, kind, name)
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def pod_specs(docs: list[dict]):
    for d in docs:
        if d["kind"] in ("Deployment", "StatefulSet", "DaemonSet"):
            yield d, d["spec"]["template"]["spec"]


def env_of(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


def operator_rules_from_docs() -> set[tuple[str, str, str]]:
    """(apiGroup, resource, verb) triples of the RBAC table in docs/operator.md."""
    text = (ROOT / "docs" / "operator.md").read_text()
    rules = set()
    table = text.split("| API group | resource | verbs | why |", 1)[1].strip().splitlines()
    for line in table[1:]:
        if not line.startswith("|"):
            break
        m = re.match(r"^\| `([^`]*)`[^|]*\| `([^`]+)` \| ([a-z, ]+) \|", line)
        assert m, f"unreadable RBAC row in docs/operator.md: {line}"
        group = m.group(1).strip('"')
        for verb in m.group(3).split(","):
            rules.add((group, m.group(2), verb.strip()))
    assert rules, "no RBAC table found in docs/operator.md"
    return rules


def rules_of(role: dict) -> set[tuple[str, str, str]]:
    out = set()
    for rule in role["rules"]:
        assert "resourceNames" not in rule or rule["resourceNames"], rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    assert verb != "*" and resource != "*" and group != "*", rule
                    out.add((group, resource, verb))
    return out


class Modes(unittest.TestCase):
    """Each mode renders, lints strictly and validates against the Kubernetes schemas."""

    def test_every_mode_renders_lints_and_validates(self):
        for mode, values in MODES.items():
            with self.subTest(mode=mode):
                docs = render(values)
                self.assertTrue(docs)
                for version in KUBE_VERSIONS:
                    report = helm.lint(
                        CHART, values, strict=True, namespace=NAMESPACE, kube_version=f"v{version}"
                    )
                    problems = [m for m in report["messages"] if m["severity"] >= 2]
                    self.assertEqual(problems, [], f"lint ({mode}, {version})")
                    self.assertEqual(report["errors"], [], f"lint ({mode}, {version})")
                    for doc in docs:
                        key = (doc["apiVersion"], doc["kind"])
                        if key in FOREIGN_KINDS:
                            continue
                        try:
                            kubernetes_validate.validate(strip(doc), version, strict=True)
                        except kubernetes_validate.ValidationError as e:
                            self.fail(f"{mode}: {doc['kind']} {doc['metadata']['name']} "
                                      f"({doc['_template']}) is invalid for Kubernetes {version}: {e.message}")
                names = [(d["kind"], d["metadata"]["name"]) for d in docs]
                self.assertEqual(len(names), len(set(names)), f"duplicate objects in {mode}")
                for kind, name in names:
                    self.assertLessEqual(len(name), 63, f"{kind} {name}")
                for d in docs:
                    if d["kind"] not in CLUSTER_KINDS:
                        self.assertEqual(d["metadata"].get("namespace"), NAMESPACE,
                                         f"{d['kind']} {d['metadata']['name']}")

    def test_service_monitor_shape(self):
        docs = render(MODES["TLS on"])
        monitors = find(docs, "ServiceMonitor")
        self.assertEqual(len(monitors), 2)
        services = find(docs, "Service")
        for m in monitors:
            selector = m["spec"]["selector"]["matchLabels"]
            ports = [p["name"] for s in services
                     if selector.items() <= s["metadata"]["labels"].items() for p in s["spec"]["ports"]]
            self.assertIn(m["spec"]["endpoints"][0]["port"], ports, m["metadata"]["name"])
            self.assertEqual(m["spec"]["endpoints"][0]["path"], "/metrics")


class Essentials(unittest.TestCase):
    def test_sip_service_is_a_load_balancer_with_udp_and_tcp_5060(self):
        for mode, values in MODES.items():
            with self.subTest(mode=mode):
                sip = one(render(values), "Service", f"{RELEASE}-kubepbx-sip")
                self.assertEqual(sip["spec"]["type"], "LoadBalancer")
                self.assertEqual(sip["spec"]["externalTrafficPolicy"], "Local")
                ports = {(p["protocol"], p["port"]) for p in sip["spec"]["ports"]}
                self.assertLessEqual({("UDP", 5060), ("TCP", 5060)}, ports)
                self.assertEqual(("TCP", 5061) in ports, mode == "TLS on")

    def test_every_container_is_non_root_and_locked_down(self):
        for mode, values in MODES.items():
            docs = render(values)
            for owner, spec in pod_specs(docs):
                pod_sc = spec.get("securityContext", {})
                for c in spec.get("initContainers", []) + spec["containers"]:
                    with self.subTest(mode=mode, workload=owner["metadata"]["name"], container=c["name"]):
                        sc = {**pod_sc, **c.get("securityContext", {})}
                        self.assertTrue(sc.get("runAsNonRoot"), "runAsNonRoot")
                        self.assertNotEqual(sc.get("runAsUser", 0), 0, "runAsUser")
                        self.assertIs(sc.get("allowPrivilegeEscalation"), False)
                        self.assertIs(sc.get("readOnlyRootFilesystem"), True)
                        self.assertIn("ALL", sc.get("capabilities", {}).get("drop", []))
                        self.assertFalse(sc.get("privileged", False))
                        self.assertIn("memory", c["resources"].get("limits", {}))
                        self.assertTrue(c["resources"].get("requests"))

    def test_crd_is_the_one_in_crds(self):
        source = (ROOT / "crds" / "extension.yaml").read_text()
        self.assertEqual((CHART / "crds" / "extension.yaml").read_text(), source,
                         "charts/kubepbx/crds/extension.yaml differs from crds/extension.yaml: copy it")
        crds = helm.Chart.load(CHART).crds
        self.assertEqual(len(crds), 1)
        loaded = [d for d in yaml.safe_load_all(source) if d]
        self.assertEqual(len(loaded), 1)
        for version in KUBE_VERSIONS:
            kubernetes_validate.validate(loaded[0], version, strict=True)

    def test_operator_rbac_is_what_docs_operator_md_lists(self):
        expected = operator_rules_from_docs()
        for mode in ("default", "external etcd"):
            with self.subTest(mode=mode):
                docs = render(MODES[mode])
                name = f"{RELEASE}-kubepbx-operator"
                kind = "ClusterRole" if mode == "default" else "Role"
                granted = rules_of(one(docs, kind, name)) | rules_of(one(docs, "Role", f"{name}-leader"))
                self.assertEqual(granted, expected)
                leader = one(docs, "Role", f"{name}-leader")
                self.assertEqual({r for r in rules_of(leader)}, {t for t in expected if t[0] == "coordination.k8s.io"})
                # Bound to the operator's account and nothing else.
                for binding_kind in ("ClusterRoleBinding", "RoleBinding"):
                    for b in find(docs, binding_kind):
                        if b["roleRef"]["name"].startswith(name):
                            self.assertEqual(b["subjects"], [{"kind": "ServiceAccount", "name": name, "namespace": NAMESPACE}])
                deployment = one(docs, "Deployment", name)
                self.assertEqual(deployment["spec"]["template"]["spec"]["serviceAccountName"], name)
                self.assertEqual(deployment["spec"]["replicas"], 2)
                env = env_of(deployment["spec"]["template"]["spec"]["containers"][0])
                self.assertEqual("KUBEPBX_NAMESPACE" in env, kind == "Role")

    def test_other_roles_read_only_their_own_services(self):
        docs = render(MODES["default"])
        service_names = {s["metadata"]["name"] for s in find(docs, "Service")}
        for role in find(docs, "Role"):
            if "operator" in role["metadata"]["name"]:
                continue
            for rule in role["rules"]:
                self.assertEqual(rule["resources"], ["services"])
                self.assertEqual(rule["verbs"], ["get"])
                self.assertTrue(rule["resourceNames"])
                self.assertLessEqual(set(rule["resourceNames"]), service_names)

    def test_ingress_routes_ws_phone_and_admin_to_the_registrars(self):
        for mode in ("default", "TLS on"):
            with self.subTest(mode=mode):
                docs = render(MODES[mode])
                ingress = one(docs, "Ingress", f"{RELEASE}-kubepbx")
                paths = {p["path"]: p["backend"]["service"] for rule in ingress["spec"]["rules"] for p in rule["http"]["paths"]}
                self.assertEqual(set(paths), {"/ws", "/phone", "/"})
                http = one(docs, "Service", paths["/ws"]["name"])
                port = next(p for p in http["spec"]["ports"] if p["name"] == paths["/ws"]["port"]["name"])
                registrar = one(docs, "Deployment", f"{RELEASE}-kubepbx-registrar")
                container = registrar["spec"]["template"]["spec"]["containers"][0]
                self.assertIn(port["targetPort"], [p["name"] for p in container["ports"] if p["protocol"] == "TCP"])
                self.assertLessEqual(http["spec"]["selector"].items(), registrar["spec"]["template"]["metadata"]["labels"].items())
                timeout = ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-read-timeout"]
                self.assertGreaterEqual(int(timeout), 3600)
                if mode == "TLS on":
                    self.assertEqual(ingress["spec"]["ingressClassName"], "nginx")
                    self.assertEqual(ingress["spec"]["tls"][0]["hosts"], ["pbx.example.net"])
                    self.assertEqual(ingress["metadata"]["annotations"]["cert-manager.io/cluster-issuer"], "letsencrypt")
        self.assertEqual(find(render(MODES["Ingress off"]), "Ingress"), [])

    def test_registrars_scale_and_survive_disruption(self):
        docs = render(MODES["default"])
        name = f"{RELEASE}-kubepbx-registrar"
        deployment = one(docs, "Deployment", name)
        spec = deployment["spec"]["template"]["spec"]
        self.assertGreater(spec["terminationGracePeriodSeconds"], 32 + 45)
        self.assertEqual(deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"], 0)
        c = spec["containers"][0]
        self.assertEqual(c["readinessProbe"]["httpGet"]["path"], "/readyz")
        hpa = one(docs, "HorizontalPodAutoscaler", name)
        self.assertEqual(hpa["spec"]["minReplicas"], 3)
        self.assertEqual(hpa["spec"]["scaleTargetRef"]["name"], name)
        one(docs, "PodDisruptionBudget", name)
        headless = one(docs, "Service", name)
        self.assertEqual(headless["spec"]["clusterIP"], "None")
        env = env_of(c)
        self.assertEqual(env["KUBEPBX_ADVERTISE_SERVICE"]["value"], f"{RELEASE}-kubepbx-sip")
        self.assertEqual(env["KUBEPBX_ADMIN_TOKEN"]["valueFrom"]["secretKeyRef"]["name"], f"{RELEASE}-kubepbx-admin")
        etcd_urls = env["KUBEPBX_ETCD"]["value"].split(",")
        self.assertEqual(len(etcd_urls), 3)
        # Without autoscaling the Deployment names its replicas.
        fixed = one(render(MODES["Ingress off"]), "Deployment", name)
        self.assertEqual(fixed["spec"]["replicas"], 3)
        # A fixed advertise address replaces the lookup (and the service account token).
        lb = one(render(MODES["LoadBalancer media"]), "Deployment", name)
        lb_env = env_of(lb["spec"]["template"]["spec"]["containers"][0])
        self.assertEqual(lb_env["KUBEPBX_ADVERTISE"]["value"], "sip.example.net")
        self.assertNotIn("KUBEPBX_ADVERTISE_SERVICE", lb_env)
        self.assertFalse(lb["spec"]["template"]["spec"]["automountServiceAccountToken"])

    def test_media_modes(self):
        docs = render(MODES["LoadBalancer media"])
        name = f"{RELEASE}-kubepbx-media"
        sts = one(docs, "StatefulSet", name)
        self.assertEqual(sts["spec"]["replicas"], 3)
        self.assertFalse(sts["spec"]["template"]["spec"].get("hostNetwork", False))
        for i in range(3):
            svc = one(docs, "Service", f"{name}-{i}")
            self.assertEqual(svc["spec"]["type"], "LoadBalancer")
            self.assertEqual(svc["spec"]["selector"]["statefulset.kubernetes.io/pod-name"], f"{name}-{i}")
            ports = {(p["protocol"], p["port"]) for p in svc["spec"]["ports"]}
            self.assertEqual(ports, {("UDP", p) for p in range(30000, 30040)} | {("UDP", 21000)})
            self.assertEqual(svc["spec"].get("loadBalancerIP"), ["203.0.113.10", "203.0.113.11", None][i])
        env = env_of(sts["spec"]["template"]["spec"]["containers"][0])
        self.assertEqual(env["KUBEPBX_ADVERTISE_SERVICE"]["valueFrom"]["fieldRef"]["fieldPath"], "metadata.name")
        self.assertEqual(env["KUBEPBX_RTP_PORTS"]["value"], "30000-30039")
        role = one(docs, "Role", name)
        self.assertEqual(role["rules"][0]["resourceNames"], [f"{name}-{i}" for i in range(3)])

        docs = render(MODES["hostNetwork media"])
        ds = one(docs, "DaemonSet", name)
        spec = ds["spec"]["template"]["spec"]
        self.assertTrue(spec["hostNetwork"])
        self.assertEqual(spec["dnsPolicy"], "ClusterFirstWithHostNet")
        env = env_of(spec["containers"][0])
        self.assertEqual(env["KUBEPBX_ADVERTISE"]["valueFrom"]["fieldRef"]["fieldPath"], "status.hostIP")
        self.assertEqual([s for s in find(docs, "Service") if s["metadata"]["name"].startswith(f"{name}-")], [])
        self.assertEqual(find(docs, "StatefulSet", name), [])

    def test_etcd_bundled_or_external(self):
        docs = render(MODES["default"])
        etcd = one(docs, "StatefulSet", f"{RELEASE}-kubepbx-etcd")
        self.assertEqual(etcd["spec"]["replicas"], 3)
        self.assertEqual(etcd["spec"]["volumeClaimTemplates"][0]["spec"]["accessModes"], ["ReadWriteOnce"])
        args = etcd["spec"]["template"]["spec"]["containers"][0]["args"]
        cluster = next(a for a in args if a.startswith("--initial-cluster="))
        self.assertEqual(cluster.count("=http://"), 3)
        self.assertEqual(one(docs, "PodDisruptionBudget", f"{RELEASE}-kubepbx-etcd")["spec"]["minAvailable"], 2)

        docs = render(MODES["external etcd"])
        self.assertEqual(find(docs, "StatefulSet"), [s for s in find(docs, "StatefulSet") if "etcd" not in s["metadata"]["name"]])
        for owner, spec in pod_specs(docs):
            env = env_of(spec["containers"][0])
            self.assertEqual(env["KUBEPBX_ETCD"]["value"], "https://etcd-0.db:2379,https://etcd-1.db:2379")
            self.assertEqual(env["KUBEPBX_ETCD_CA"]["value"], "/etc/kubepbx/etcd-tls/ca.crt")
            volumes = {v["name"]: v for v in spec["volumes"]}
            self.assertEqual(volumes["etcd-tls"]["secret"]["secretName"], "etcd-client")
            mounts = {m["name"] for m in spec["containers"][0]["volumeMounts"]}
            self.assertIn("etcd-tls", mounts)

    def test_network_policies_admit_only_what_must_talk(self):
        docs = render(MODES["default"])
        policies = {p["metadata"]["name"]: p for p in find(docs, "NetworkPolicy")}
        self.assertEqual(set(policies), {f"{RELEASE}-kubepbx-{c}" for c in ("registrar", "media", "operator", "etcd")})
        etcd = policies[f"{RELEASE}-kubepbx-etcd"]["spec"]["ingress"]
        client = next(r for r in etcd if r["ports"][0]["port"] == 2379)
        components = {f["podSelector"]["matchLabels"]["app.kubernetes.io/component"] for f in client["from"]}
        self.assertEqual(components, {"registrar", "operator", "media", "etcd"})
        media = policies[f"{RELEASE}-kubepbx-media"]["spec"]["ingress"]
        control = next(r for r in media if r["ports"][0]["protocol"] == "TCP")
        self.assertEqual(control["from"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/component"], "registrar")
        rtp = next(r for r in media if r["ports"][0]["protocol"] == "UDP")
        self.assertEqual((rtp["ports"][0]["port"], rtp["ports"][0]["endPort"]), (20000, 20199))
        internal = next(r for r in policies[f"{RELEASE}-kubepbx-registrar"]["spec"]["ingress"] if r["ports"][0]["port"] == 5070)
        self.assertEqual(internal["from"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/component"], "registrar")
        host = {p["metadata"]["name"]: p for p in find(render(MODES["hostNetwork media"]), "NetworkPolicy")}
        self.assertNotIn(f"{RELEASE}-kubepbx-media", host)
        etcd = host[f"{RELEASE}-kubepbx-etcd"]["spec"]["ingress"]
        client = next(r for r in etcd if r["ports"][0]["port"] == 2379)
        self.assertIn({"ipBlock": {"cidr": "10.0.0.0/16"}}, client["from"])

    def test_admin_token_secret(self):
        docs = render(MODES["TLS on"])
        secret = one(docs, "Secret", f"{RELEASE}-kubepbx-admin")
        self.assertEqual(base64.b64decode(secret["data"]["token"]).decode(), "0123456789abcdef0123")
        generated = one(render(MODES["default"]), "Secret", f"{RELEASE}-kubepbx-admin")
        self.assertGreaterEqual(len(base64.b64decode(generated["data"]["token"])), 32)
        existing = render({"adminToken": {"existingSecret": "my-token"}})
        self.assertEqual(find(existing, "Secret", f"{RELEASE}-kubepbx-admin"), [])
        registrar = one(existing, "Deployment", f"{RELEASE}-kubepbx-registrar")
        env = env_of(registrar["spec"]["template"]["spec"]["containers"][0])
        self.assertEqual(env["KUBEPBX_ADMIN_TOKEN"]["valueFrom"]["secretKeyRef"]["name"], "my-token")

    def test_recordings_share_one_claim(self):
        docs = render(MODES["TLS on"])
        claim = one(docs, "PersistentVolumeClaim", f"{RELEASE}-kubepbx-recordings")
        self.assertEqual(claim["spec"]["accessModes"], ["ReadWriteMany"])
        for kind, component in (("Deployment", "registrar"), ("StatefulSet", "media")):
            spec = one(docs, kind, f"{RELEASE}-kubepbx-{component}")["spec"]["template"]["spec"]
            env = env_of(spec["containers"][0])
            self.assertEqual(env["KUBEPBX_RECORDINGS_DIR"]["value"], "/var/lib/kubepbx/recordings")
            volumes = {v["name"]: v for v in spec["volumes"]}
            self.assertEqual(volumes["recordings"]["persistentVolumeClaim"]["claimName"], claim["metadata"]["name"])

    def test_notes_tell_how_to_find_the_sip_address_and_log_in(self):
        text = notes(MODES["default"])
        self.assertIn(f"kubectl -n {NAMESPACE} get service {RELEASE}-kubepbx-sip", text)
        self.assertIn(f"get secret {RELEASE}-kubepbx-admin", text)
        self.assertIn("/phone/", text)
        self.assertIn("WARNING: domain is still pbx.example.com", text)
        self.assertNotIn("WARNING", notes(MODES["TLS on"]))
        self.assertIn("https://pbx.example.net/phone/", notes(MODES["TLS on"]))
        self.assertIn("port-forward", notes(MODES["Ingress off"]))


class Binary(unittest.TestCase):
    """Every KUBEPBX_* variable the chart sets is a flag of the command it is set for."""

    def test_env_vars_are_flags_of_the_binary(self):
        binary = os.environ.get("KUBEPBX_BIN") or str(
            Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "debug" / "kubepbx")
        if not Path(binary).exists():
            self.fail(f"{binary} not found: build it first (cargo build -p kubepbx) or set KUBEPBX_BIN")
        helps: dict[str, str] = {}
        missing = set()
        for values in MODES.values():
            for owner, spec in pod_specs(render(values)):
                for c in spec["containers"]:
                    if not c["image"].startswith(CHART_IMAGE_PREFIX):
                        continue
                    command = c["args"][0]
                    if command not in helps:
                        helps[command] = subprocess.run(
                            [binary, command, "--help"], capture_output=True, text=True, check=True).stdout
                    for name in env_of(c):
                        if name.startswith("KUBEPBX_") and f"[env: {name}" not in helps[command]:
                            missing.add(f"kubepbx {command}: {name}")
        self.assertEqual(sorted(missing), [], "variables the chart sets that are no flag of the command")
        self.assertEqual(set(helps), {"registrar", "media", "operator"})


CHART_IMAGE_PREFIX = "kubepbx:"


class BadValues(unittest.TestCase):
    """Wrong types and impossible combinations fail with a message naming the value."""

    CASES = [
        ({"registrar": {"replicas": "three"}}, "/registrar/replicas"),
        ({"registar": {"replicas": 3}}, "registar"),
        ({"media": {"mode": "host"}}, "/media/mode"),
        ({"media": {"rtpPorts": {"first": 20001, "last": 20199}}}, "/media/rtpPorts/first"),
        ({"sip": {"service": {"port": 70000}}}, "/sip/service/port"),
        ({"etcd": {"bundled": {"replicas": 2}}}, "/etcd/bundled/replicas"),
        ({"adminToken": {"value": "short"}}, "/adminToken/value"),
        ({"etcd": {"bundled": {"enabled": False}}}, "/etcd/external/endpoints"),
        ({"etcd": {"external": {"endpoints": ["http://etcd:2379"]}}}, "etcd.bundled.enabled=true or etcd.external.endpoints"),
        ({"etcd": {"bundled": {"enabled": False}, "external": {"endpoints": ["https://etcd:2379"]}}}, "etcd.external.tls.secretName"),
        ({"etcd": {"bundled": {"enabled": False}, "external": {"endpoints": ["http://a:2379", "https://b:2379"]}}}, "etcd.external.endpoints mixes"),
        ({"sip": {"tls": {"enabled": True}}}, "/sip/tls/secretName"),
        ({"media": {"webrtcPort": 20010}}, "media.webrtcPort"),
        ({"media": {"rtpPorts": {"first": 20100, "last": 20000}}}, "media.rtpPorts.first"),
        ({"media": {"replicas": 1, "addresses": ["203.0.113.1", "203.0.113.2"]}}, "media.addresses"),
        ({"media": {"mode": "hostNetwork"}}, "networkPolicy.nodeCIDRs"),
        ({"ingress": {"enabled": False, "tls": {"enabled": True}}}, "ingress.tls.enabled"),
        ({"registrar": {"wsAllowedOrigins": ["phone.example.com"]}}, "/registrar/wsAllowedOrigins/0"),
    ]

    def test_bad_values_fail_naming_the_value(self):
        for values, named in self.CASES:
            with self.subTest(values=values):
                with self.assertRaises(helm.HelmError) as caught:
                    render_files(values)
                self.assertIn(named, str(caught.exception))


class Dockerfile(unittest.TestCase):
    """The image runs as a non-root user and holds only the binary and the web assets."""

    def stages(self) -> list[list[tuple[str, str]]]:
        lines, stages = [], []
        text = (ROOT / "Dockerfile").read_text()
        text = re.sub(r"\\\n", " ", text)
        for raw in text.splitlines():
            raw = raw.strip()
            if not raw or raw.startswith("#"):
                continue
            instruction, _, rest = raw.partition(" ")
            if instruction.upper() == "FROM":
                stages.append([])
            stages[-1].append((instruction.upper(), rest.strip()))
        return stages

    def test_runtime_stage(self):
        stages = self.stages()
        self.assertGreaterEqual(len(stages), 2, "multi-stage build")
        build = [s for s in stages if any(i == "RUN" and "cargo build" in r and "--release" in r for i, r in s)]
        self.assertTrue(build, "a stage builds the release binary")
        final = stages[-1]
        users = [r for i, r in final if i == "USER"]
        self.assertTrue(users, "the runtime stage sets USER")
        user = users[-1].split(":")[0]
        self.assertNotIn(user, ("0", "root"))
        self.assertNotIn("RUN", [i for i, _ in final], "the runtime stage runs nothing (no shell, no packages)")
        copies = [r for i, r in final if i in ("COPY", "ADD")]
        self.assertEqual(len(copies), 2, copies)
        sources = sorted(c.split()[1] for c in copies)
        self.assertTrue(all(c.startswith("--from=") for c in copies), copies)
        self.assertTrue(any(s.endswith("/kubepbx") for s in sources), sources)
        self.assertTrue(any(s.endswith("/dist") for s in sources), sources)
        entry = [r for i, r in final if i == "ENTRYPOINT"]
        self.assertEqual(entry, ['["/usr/local/bin/kubepbx"]'])
        env = " ".join(r for i, r in final if i == "ENV")
        self.assertIn("KUBEPBX_WEB_DIR=/usr/share/kubepbx/web", env)

    def test_dockerignore_sends_only_sources(self):
        lines = [l.strip() for l in (ROOT / ".dockerignore").read_text().splitlines()
                 if l.strip() and not l.startswith("#")]
        self.assertEqual(lines[0], "*", "ignore everything, then allow what the build reads")
        allowed = {l[1:].rstrip("/") for l in lines if l.startswith("!")}
        members = re.search(r"^members = \[(.*)\]", (ROOT / "Cargo.toml").read_text(), re.M).group(1)
        for member in re.findall(r'"([^"]+)"', members):
            self.assertIn(member.split("/")[0], allowed, f"workspace member {member} is not in the build context")
        for needed in ("Cargo.toml", "Cargo.lock", "web"):
            self.assertIn(needed, allowed)
        for excluded in ("web/node_modules/", "web/dist/", "**/target/"):
            self.assertIn(excluded, lines)


if __name__ == "__main__":
    unittest.main(verbosity=2)
