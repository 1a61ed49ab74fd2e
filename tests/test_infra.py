"""The cluster files under infra/ agree with each other and with the project: YAML that parses
(and a launcher config Ray accepts), worker images that install what `make install` installs at
the locked versions, one image name everywhere, a RayJob whose entrypoint runs a dvc.yaml stage
of an existing CLI subcommand with params the config accepts, on GPU workers enough for the Ray
Train workers it asks for, and one workspace path on every node."""
import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.specifiers import SpecifierSet

from components.cli import build_parser
from components.config import params_from_dict
from tests.conftest import REPO
from tests.test_dependencies import declared

INFRA = REPO / "infra"
DOCKERFILES = {flavour: INFRA / "docker" / f"Dockerfile.{flavour}" for flavour in ("cpu", "cuda")}
CHECKOUT_SCRIPT = INFRA / "ray" / "checkout.sh"
CHECKOUT_COMMAND = "emoreason-checkout"
# dvc options that take a value: the rest of an argv's non-option words are targets
DVC_VALUE_OPTIONS = {"-S", "--set-param", "-n", "--name", "-j", "--jobs", "-m", "--message",
                     "-r", "--remote", "-C", "--copy-paths"}


def load_yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def rayjob() -> dict:
    return load_yaml(INFRA / "ray" / "rayjob.yaml")


def cluster_config() -> dict:
    return load_yaml(INFRA / "ray" / "cluster.yaml")


def lock_pins() -> dict[str, str]:
    lines = (REPO / "requirements" / "lock.txt").read_text().splitlines()
    return dict(line.strip().split("==") for line in lines if line.strip() and not line.startswith("#"))


def dockerfile_args(path: Path) -> dict[str, str]:
    """`ARG NAME=default` of a Dockerfile, quotes removed."""
    return {name: value.strip('"') for name, value in
            re.findall(r"^ARG (\w+)=(.+)$", path.read_text(), flags=re.MULTILINE)}


def apt_packages(path: Path) -> set[str]:
    """What the Dockerfile's `apt-get install` commands install."""
    text = re.sub(r"\\\n", " ", path.read_text())
    return {word for words in re.findall(r"apt-get install -y --no-install-recommends ([^&\n]+)", text)
            for word in words.split()}


def build_tag(path: Path) -> str:
    """The image name in the Dockerfile's documented `docker build ... -t NAME` command."""
    (tag,) = re.findall(r"^#\s+.*docker build .*-t (\S+)", path.read_text(), flags=re.MULTILINE)
    return tag


def shell_commands(line: str) -> list[list[str]]:
    """The simple commands of a shell line (split at && || ; |), each as its argv."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    commands, current = [], []
    for token in lexer:
        if token in ("&&", "||", ";", "|"):
            commands.append(current)
            current = []
        else:
            current.append(token)
    return [c for c in commands + [current] if c]


def dvc_run(argv: list[str]) -> tuple[list[str], dict[str, object]]:
    """The targets and -S overrides of a `dvc exp run` / `dvc repro` argv."""
    targets, overrides, words = [], {}, iter(argv[3:] if argv[1] == "exp" else argv[2:])
    for word in words:
        if word in ("-S", "--set-param"):
            key, value = next(words).split("=", 1)
            overrides[key] = yaml.safe_load(value)
        elif word in DVC_VALUE_OPTIONS:
            next(words)
        elif not word.startswith("-"):
            targets.append(word)
    return targets, overrides


def entrypoint_run() -> tuple[list[str], dict[str, object]]:
    runs = [c for c in shell_commands(rayjob()["spec"]["entrypoint"])
            if c[:3] == ["dvc", "exp", "run"] or c[:2] == ["dvc", "repro"]]
    assert len(runs) == 1, runs
    return dvc_run(runs[0])


def effective_params() -> dict:
    """params.yaml with the entrypoint's -S overrides applied, as the job's stage sees it."""
    data = load_yaml(REPO / "params.yaml")
    for key, value in entrypoint_run()[1].items():
        *parents, leaf = key.split(".")
        section = data
        for name in parents:
            section = section.setdefault(name, {})
        section[leaf] = value
    return data


def pod_specs() -> dict[str, dict]:
    cluster = rayjob()["spec"]["rayClusterSpec"]
    specs = {"head": cluster["headGroupSpec"]["template"]["spec"]}
    specs |= {group["groupName"]: group["template"]["spec"] for group in cluster["workerGroupSpecs"]}
    return specs


def containers(spec: dict) -> list[dict]:
    return spec.get("initContainers", []) + spec["containers"]


def gpus(container: dict) -> int:
    return int(container.get("resources", {}).get("limits", {}).get("nvidia.com/gpu", 0))


def env_value(container: dict, name: str) -> str | None:
    return next((e["value"] for e in container.get("env", []) if e["name"] == name), None)


def test_every_yaml_under_infra_parses_into_mappings():
    paths = sorted(INFRA.rglob("*.yaml")) + sorted(INFRA.rglob("*.yml"))
    assert {p.name for p in paths} >= {"cluster.yaml", "rayjob.yaml", "workspace.yaml"}
    for path in paths:
        documents = list(yaml.safe_load_all(path.read_text()))
        assert documents and all(isinstance(d, dict) for d in documents), path


def test_ray_accepts_the_cluster_launcher_config():
    # What `ray up` runs on the file (a private module of Ray's autoscaler, hence imported here).
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = prepare_config(cluster_config())
    validate_config(config)
    node_types = config["available_node_types"]
    head = node_types[config["head_node_type"]]
    gpu_types = [t for t in node_types.values() if t["resources"].get("GPU", 0) >= 1]
    assert "GPU" not in head["resources"] and gpu_types
    assert all(0 <= t["min_workers"] <= t["max_workers"] <= config["max_workers"] for t in gpu_types)


def test_images_install_what_make_install_installs():
    makefile = (REPO / "Makefile").read_text()
    installs = [f"pip install {rest}" for rest in re.findall(r"\$\(PIP\) install (.+)", makefile)
                if "--upgrade pip" not in rest]
    installs.append(re.search(r"^\temoreason model prepare$", makefile, re.MULTILINE).group(0).strip())
    assert any("requirements/lock.txt" in c for c in installs) and any("-e ." in c for c in installs)
    for path in DOCKERFILES.values():
        text = re.sub(r"\s+", " ", path.read_text())
        for command in installs:
            assert command in text, f"{path.name} lacks `{command}` (Makefile)"


def test_images_run_the_locked_python_torch_and_ray():
    pins, ranges = lock_pins(), declared()
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    for flavour, path in DOCKERFILES.items():
        args, text = dockerfile_args(path), path.read_text()
        assert f"{args['PYTHON_VERSION']}.0" in SpecifierSet(project["requires-python"]), flavour
        assert args["TORCH_VERSION"] == pins["torch"], flavour
        assert ranges["torch"].specifier.contains(args["TORCH_VERSION"]), flavour
        assert args["RAY_VERSION"] == pins["ray"], flavour
        assert ranges["ray"].specifier.contains(args["RAY_VERSION"]), flavour
        assert "pip install --quiet torch==${TORCH_VERSION} --index-url ${TORCH_INDEX}" in text
        assert '"ray[default,train,data]==${RAY_VERSION}"' in text, flavour


def test_the_torch_wheel_matches_each_base_image():
    cpu, cuda = (dockerfile_args(p) for p in DOCKERFILES.values())
    assert cpu["TORCH_INDEX"].endswith("/whl/cpu")
    assert re.search(r"^FROM python:\$\{PYTHON_VERSION\}-slim", DOCKERFILES["cpu"].read_text(), re.M)
    assert re.search(r"^FROM \$\{CUDA_IMAGE\}$", DOCKERFILES["cuda"].read_text(), re.M)
    base = re.fullmatch(r"nvidia/cuda:(\d+)\.(\d+)\.\d+-runtime-ubuntu[\d.]+", cuda["CUDA_IMAGE"])
    assert base, cuda["CUDA_IMAGE"]
    assert cuda["TORCH_INDEX"].endswith(f"/whl/cu{base.group(1)}{base.group(2)}")
    assert "python${PYTHON_VERSION} -m venv" in DOCKERFILES["cuda"].read_text()


def test_images_have_what_the_cluster_tools_run():
    for path in DOCKERFILES.values():
        text = path.read_text()
        assert {"git", "wget", "rsync", "openssh-client"} <= apt_packages(path), path.name
        assert f"COPY --chmod=755 infra/ray/checkout.sh /usr/local/bin/{CHECKOUT_COMMAND}" in text
        assert "/etc/profile.d/" in text  # login shells keep the venv on PATH


def test_one_image_name_everywhere():
    cpu, cuda = (build_tag(p) for p in DOCKERFILES.values())
    assert (cpu, cuda) == ("emoreason/worker:cpu", "emoreason/worker:cuda")
    assert cluster_config()["docker"]["image"] == cuda
    assert {c["image"] for spec in pod_specs().values() for c in containers(spec)} == {cuda}
    readme = (INFRA / "README.md").read_text()
    for path in DOCKERFILES.values():
        command = re.search(r"^#\s+(git archive .*docker build .*)$", path.read_text(), re.M).group(1)
        assert command in readme, command


def test_the_rayjob_runs_an_existing_stage_of_an_existing_subcommand():
    stages = load_yaml(REPO / "dvc.yaml")["stages"]
    targets, _ = entrypoint_run()
    assert targets and set(targets) <= set(stages), targets
    for target in targets:
        argv = shlex.split(stages[target]["cmd"])
        assert argv[0] == "emoreason"
        build_parser().parse_args(argv[1:])  # an unknown subcommand or option exits
    checkouts = [c["command"] for spec in pod_specs().values() for c in spec.get("initContainers", [])]
    checkouts += [shell_commands(c)[0] for c in cluster_config()["head_setup_commands"]
                  if c.startswith(CHECKOUT_COMMAND)]
    assert len(checkouts) == 2 and all(c == [CHECKOUT_COMMAND, *targets] for c in checkouts), checkouts


def test_readme_commands_parse():
    commands = re.findall(r"`(emoreason [^`]+)`", (INFRA / "README.md").read_text())
    assert commands
    for command in commands:
        build_parser().parse_args(shlex.split(command)[1:])


def test_the_rayjob_overrides_are_params_the_config_accepts():
    _, overrides = entrypoint_run()
    assert overrides["rl.ray.address"] == "auto" and overrides["rl.ray.use_gpu"] is True
    params = params_from_dict(effective_params())  # an unknown key or a wrong type raises
    assert params.rl.ray.address == "auto" and params.rl.ray.use_gpu


def test_the_gpu_workers_fit_the_ray_train_workers():
    ray_cfg = params_from_dict(effective_params()).rl.ray
    specs = pod_specs()
    assert all(gpus(c) == 0 for c in containers(specs.pop("head")))
    groups = {g["groupName"]: g for g in rayjob()["spec"]["rayClusterSpec"]["workerGroupSpecs"]}
    slots = 0
    for name, spec in specs.items():
        (container,) = spec["containers"]
        resources = container["resources"]
        assert resources["requests"]["nvidia.com/gpu"] == resources["limits"]["nvidia.com/gpu"]
        assert float(resources["limits"]["cpu"]) >= ray_cfg.cpus_per_worker
        per_pod = int(gpus(container) // ray_cfg.gpus_per_worker)
        slots += per_pod * groups[name]["minReplicas"]
        assert groups[name]["minReplicas"] <= groups[name]["replicas"] <= groups[name]["maxReplicas"]
    assert slots >= ray_cfg.num_workers >= 1 and ray_cfg.use_gpu


def test_the_rayjob_cleans_up_after_itself():
    job = rayjob()
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    assert job["spec"]["shutdownAfterJobFinishes"] is True
    assert job["spec"]["ttlSecondsAfterFinished"] > 0
    assert job["spec"]["rayClusterSpec"]["rayVersion"] == lock_pins()["ray"]


def test_every_node_sees_one_workspace_path():
    workspace = re.search(r"^cd (\S+)", rayjob()["spec"]["entrypoint"]).group(1)
    script = CHECKOUT_SCRIPT.read_text()
    assert re.search(r"workspace=\$\{EMOREASON_WORKSPACE:-(\S+)\}", script).group(1) == workspace
    claim = load_yaml(INFRA / "ray" / "workspace.yaml")
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    for name, spec in pod_specs().items():
        volumes = {v["name"]: v for v in spec["volumes"]}
        for container in containers(spec):
            assert env_value(container, "PYTHONPATH") == workspace, (name, container["name"])
            assert env_value(container, "EMOREASON_WORKSPACE") in (None, workspace)
            mounts = [m for m in container["volumeMounts"] if workspace.startswith(m["mountPath"] + "/")]
            assert [volumes[m["name"]]["persistentVolumeClaim"]["claimName"] for m in mounts] \
                == [claim["metadata"]["name"]], (name, container["name"])
    options = " ".join(cluster_config()["docker"]["run_options"])
    assert f"--env PYTHONPATH={workspace}" in options
    mount = re.search(r"--volume \S+:(\S+)", options).group(1)
    assert workspace.startswith(mount.rstrip("/") + "/")


@pytest.mark.slow
def test_the_checkout_script_checks_out_the_ref_and_pulls_the_stages_inputs(tmp_path):
    """A fresh workspace, then a used one (an edited file, a deleted output): the ref's files
    and the DVC outputs upstream of the stage named, whose own output does not exist yet."""
    env = {**os.environ, "HOME": str(tmp_path), "DVC_NO_ANALYTICS": "1", "GIT_CONFIG_NOSYSTEM": "1",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    origin, workspace = tmp_path / "origin", tmp_path / "work" / "project"
    origin.mkdir()

    def run(*argv: str, cwd: Path = origin) -> None:
        subprocess.run(argv, cwd=cwd, env=env, check=True, capture_output=True)

    run("git", "init", "-q", "-b", "main")
    run("dvc", "init", "-q")
    (origin / "dvc.yaml").write_text(yaml.safe_dump({"stages": {
        "up": {"cmd": "echo data > up.txt", "outs": ["up.txt"]},
        "down": {"cmd": "cat up.txt > down.txt", "deps": ["up.txt"], "outs": ["down.txt"]}}}))
    run("dvc", "remote", "add", "-d", "store", str(tmp_path / "remote"))
    run("dvc", "repro", "-q", "up")
    run("git", "add", "-A")
    run("git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "pipeline")
    run("dvc", "push", "-q")
    env |= {"EMOREASON_GIT_URL": origin.as_uri(), "EMOREASON_GIT_REF": "main",
            "EMOREASON_WORKSPACE": str(workspace)}

    run("bash", str(CHECKOUT_SCRIPT), "down", cwd=tmp_path)
    assert (workspace / "up.txt").read_text() == "data\n" and not (workspace / "down.txt").exists()
    (workspace / "dvc.yaml").write_text("edited")
    (workspace / "up.txt").unlink()
    run("bash", str(CHECKOUT_SCRIPT), "down", cwd=tmp_path)
    assert (workspace / "dvc.yaml").read_text() == (origin / "dvc.yaml").read_text()
    assert (workspace / "up.txt").read_text() == "data\n"

    del env["EMOREASON_GIT_URL"]
    missing = subprocess.run(["bash", str(CHECKOUT_SCRIPT), "down"], cwd=tmp_path, env=env,
                             capture_output=True, text=True)
    assert missing.returncode != 0 and "set EMOREASON_GIT_URL" in missing.stderr


@pytest.mark.parametrize("path", sorted(p.relative_to(REPO).as_posix() for p in INFRA.rglob("*")
                                        if p.is_file() and p.name != "README.md"))
def test_every_placeholder_is_documented(path):
    readme = (INFRA / "README.md").read_text()
    missing = set(re.findall(r"YOUR_[A-Z_]+", (REPO / path).read_text())) - set(
        re.findall(r"YOUR_[A-Z_]+", readme))
    assert not missing, missing


COMPOSE_DIR = INFRA / "compose"
DVC_REMOTE_EXAMPLE = INFRA / "dvc" / "config.example"
VARIABLE = re.compile(r"(?<!\$)\$\{(\w+)(?::?[-?][^}]*)?\}")  # ${NAME}, ${NAME:-x}, ${NAME:?x}


def compose() -> dict:
    return load_yaml(COMPOSE_DIR / "compose.yaml")


def env_example() -> dict[str, str]:
    lines = (COMPOSE_DIR / ".env.example").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line.strip() and not line.startswith("#"))


def interpolated(value: str) -> str:
    """`value` with compose's ${NAME...} filled from .env.example (`$$` is the container's $)."""
    return VARIABLE.sub(lambda m: env_example()[m.group(1)], value).replace("$$", "$")


def service_env(name: str) -> dict[str, str]:
    return {k: interpolated(str(v)) for k, v in compose()["services"][name]["environment"].items()}


def test_every_compose_variable_is_in_env_example_and_every_setting_used():
    text, env = (COMPOSE_DIR / "compose.yaml").read_text(), env_example()
    used = set(VARIABLE.findall(text))
    assert used - set(env) == set(), "set these in .env.example"
    readme = (INFRA / "README.md").read_text()
    assert {name for name in env if name not in used and name not in readme} == set()


def test_every_service_image_is_pinned_or_built_from_infra_docker():
    for name, service in compose()["services"].items():
        image = service["image"]
        if "build" in service:
            dockerfile = (COMPOSE_DIR / service["build"]["context"]
                          / service["build"]["dockerfile"]).resolve()
            assert dockerfile.parent == INFRA / "docker", name
            assert build_tag(dockerfile) == image, name
        else:
            repository, _, tag = image.rpartition(":")
            assert repository and tag and tag != "latest", f"{name}: pin {image}"


def test_the_servers_run_the_locked_prefect_and_mlflow():
    pins, services = lock_pins(), compose()["services"]
    assert services["prefect-server"]["image"] == f"prefecthq/prefect:{pins['prefect']}-python3.11"
    mlflow_dockerfile = INFRA / "docker" / "Dockerfile.mlflow"
    assert dockerfile_args(mlflow_dockerfile)["MLFLOW_VERSION"] == pins["mlflow"]
    assert services["mlflow"]["image"] == f"emoreason/mlflow:{pins['mlflow']}"
    assert services["prefect-worker"]["image"] == build_tag(DOCKERFILES["cpu"])


def published_ports() -> dict[str, tuple[str, int]]:
    """Service -> (host address:port, container port) of each published port."""
    ports = {}
    for name, service in compose()["services"].items():
        for entry in service.get("ports", []):
            address, host, container = interpolated(entry).split(":")
            ports[f"{name}:{container}"] = (f"{address}:{host}", int(container))
    return ports


def test_ports_are_on_localhost_and_agree_with_env_readme_and_local_services():
    env, readme = env_example(), (INFRA / "README.md").read_text()
    ports = published_ports()
    assert {k: v[0] for k, v in ports.items()} == {
        "prefect-server:4200": f"127.0.0.1:{env['PREFECT_PORT']}",
        "mlflow:5000": f"127.0.0.1:{env['MLFLOW_PORT']}",
        "minio:9000": f"127.0.0.1:{env['MINIO_API_PORT']}",
        "minio:9001": f"127.0.0.1:{env['MINIO_CONSOLE_PORT']}"}
    for address, _ in ports.values():
        assert f"http://{address}" in readme, address
    makefile = (INFRA.parent / "Makefile").read_text()  # `make up`'s servers: the same ports
    assert f"MLFLOW_PORT ?= {env['MLFLOW_PORT']}" in makefile
    assert f"PREFECT_PORT ?= {env['PREFECT_PORT']}" in makefile
    prefect_env, mlflow_command = service_env("prefect-server"), compose()["services"]["mlflow"]
    assert prefect_env["PREFECT_SERVER_API_PORT"] == "4200"
    assert "--port=5000" in mlflow_command["command"]
    worker = service_env("prefect-worker")
    assert worker["PREFECT_API_URL"] == f"http://127.0.0.1:{env['PREFECT_PORT']}/api"
    assert worker["MLFLOW_TRACKING_URI"] == f"http://127.0.0.1:{env['MLFLOW_PORT']}"
    assert prefect_env["PREFECT_UI_API_URL"] == worker["PREFECT_API_URL"]


def test_the_services_set_the_variables_prefect_and_mlflow_read():
    import mlflow.environment_variables as mlflow_env
    import prefect.settings as prefect_settings

    prefect_env, mlflow_service, worker = (service_env(n) for n in
                                           ("prefect-server", "mlflow", "prefect-worker"))
    for name in list(prefect_env) + ["PREFECT_API_URL"]:
        assert hasattr(prefect_settings, name), f"Prefect has no setting {name}"
    assert mlflow_env.MLFLOW_S3_ENDPOINT_URL.name in mlflow_service
    assert mlflow_env.MLFLOW_TRACKING_URI.name in worker
    env = env_example()
    assert mlflow_service["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"
    for service in (mlflow_service, worker):  # boto3's names, MinIO's root credentials
        assert service["AWS_ACCESS_KEY_ID"] == env["MINIO_ROOT_USER"]
        assert service["AWS_SECRET_ACCESS_KEY"] == env["MINIO_ROOT_PASSWORD"]


def test_postgres_holds_the_prefect_and_mlflow_databases():
    env, services = env_example(), compose()["services"]
    database = service_env("postgres")
    assert database["POSTGRES_DB"] == env["PREFECT_DB"] and database["MLFLOW_DB"] == env["MLFLOW_DB"]
    init = [v for v in services["postgres"]["volumes"] if "docker-entrypoint-initdb.d" in v]
    assert len(init) == 1 and (COMPOSE_DIR / init[0].split(":")[0]).is_file()
    assert 'CREATE DATABASE \\"$MLFLOW_DB\\"' in (COMPOSE_DIR / init[0].split(":")[0]).read_text()
    credentials = f"{env['POSTGRES_USER']}:{env['POSTGRES_PASSWORD']}@postgres:5432"
    assert service_env("prefect-server")["PREFECT_API_DATABASE_CONNECTION_URL"] == \
        f"postgresql+asyncpg://{credentials}/{env['PREFECT_DB']}"
    command = [interpolated(c) for c in services["mlflow"]["command"]]
    assert f"--backend-store-uri=postgresql://{credentials}/{env['MLFLOW_DB']}" in command


def test_one_bucket_for_mlflow_artifacts_the_dvc_remote_and_its_creation():
    from dvc.config import Config

    env, services = env_example(), compose()["services"]
    bucket = env["BUCKET"]
    command = [interpolated(c) for c in services["mlflow"]["command"]]
    assert f"--artifacts-destination=s3://{bucket}/mlflow" in command
    assert service_env("create-bucket")["BUCKET"] == bucket
    assert 'mc mb --ignore-existing "store/$BUCKET"' in interpolated(
        " ".join(services["create-bucket"]["command"]))
    remote_config = Config.validate(Config.load_file(str(DVC_REMOTE_EXAMPLE)))  # DVC's schema
    remote = remote_config["remote"][remote_config["core"]["remote"]]
    assert remote["url"] == f"s3://{bucket}/dvc"
    assert remote["endpointurl"] == f"http://127.0.0.1:{env['MINIO_API_PORT']}"
    example = DVC_REMOTE_EXAMPLE.read_text()
    assert f"dvc remote add -d storage s3://{bucket}/dvc" in example
    assert f"endpointurl {remote['endpointurl']}" in example
    assert f"access_key_id {env['MINIO_ROOT_USER']}" in example


def test_the_compose_worker_serves_the_local_deployments_pool_in_the_checkout():
    env, worker = env_example(), compose()["services"]["prefect-worker"]
    pools = {d["work_pool"]["name"] for d in load_yaml(REPO / "prefect.yaml")["deployments"]}
    assert env["PREFECT_WORK_POOL"] in pools
    command = [interpolated(c) for c in worker["command"]]
    assert command[:3] == ["prefect", "worker", "start"] and env["PREFECT_WORK_POOL"] in command
    mount = {interpolated(v).split(":")[1]: (COMPOSE_DIR / v.split(":")[0]).resolve()
             for v in worker["volumes"]}
    assert mount[worker["working_dir"]] == REPO
    assert service_env("prefect-worker")["PYTHONPATH"] == worker["working_dir"]
