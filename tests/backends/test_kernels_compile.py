"""Compile check of the CUDA kernels with NVRTC, no GPU or driver needed.

Every module of :func:`backends.cuda_sources.kernel_modules` is compiled for
sm_80 and sm_90 through the low-level NVRTC binding
(``cupy_backends.cuda.libs.nvrtc``), with exactly what ``cupy.RawModule``
would pass: the library's options run through
``cupy._core.core.assemble_cupy_compiler_options`` (CuPy's include
directories), then ``-ftz=true``, ``-arch=sm_XX`` and
``--device-as-default-execution-space`` (added by
``cupy.cuda.compiler._compile_with_cache_cuda`` and
``_compile_using_nvrtc_no_warning`` in CuPy 14.2), plus ``-Xptxas=-v`` so
ptxas prints its resource report into the program log.
(``cupy.cuda.compiler.compile_using_nvrtc`` is not usable here: it asks the
driver for the device's architecture.)

A module fails on: a compile error; any warning in the log (front end or
ptxas); a local-memory spill or a stack frame; a name expression without a
lowered name or without a compiled entry function; a kernel using more
registers than a block of ``MAX_BLOCK`` threads can have; more than 48 KiB of
static shared memory. Nothing is cached between runs: every run recompiles.

The packages come with the ``test`` extra (``cupy-cuda13x``,
``nvidia-cuda-nvrtc`` and ``nvidia-cuda-runtime`` for the CUDA headers).
Where they are missing the tests skip with the reason, except under CI (or
with ``GPULAYERS_REQUIRE_KERNEL_CHECK=1``), where they fail.
"""

import os
import re

import pytest

pytestmark = pytest.mark.kernels

ARCHS = ("sm_80", "sm_90")
# What CuPy 14.2 adds around assemble_cupy_compiler_options(options) when a
# RawModule compiles with NVRTC; the -arch option goes between the two.
CUPY_FTZ = "-ftz=true"
CUPY_EXEC_SPACE = "--device-as-default-execution-space"
PTXAS_VERBOSE = "-Xptxas=-v"
REGISTERS_PER_BLOCK = 65536  # sm_80 and sm_90
STATIC_SMEM_LIMIT = 48 * 1024
# Warnings that are not serious; (regex on the log line, why). Empty: every
# warning fails until someone decides otherwise here.
ALLOWED_WARNINGS = ()


def _unavailable(reason):
    """Skip where the compile tools are missing, but fail under CI, which must run this check."""
    if os.environ.get("CI") or os.environ.get("GPULAYERS_REQUIRE_KERNEL_CHECK"):
        pytest.fail(f"the NVRTC compile check cannot run: {reason} (install the 'test' extra)")
    pytest.skip(f"the NVRTC compile check needs the 'test' extra: {reason}")


@pytest.fixture(scope="module")
def toolchain():
    """(nvrtc binding, assemble_cupy_compiler_options, NVRTC version, supported archs)."""
    try:
        import cupy  # noqa: F401  (loads cupy_backends and finds the CUDA wheels)
        from cupy._core.core import assemble_cupy_compiler_options
        from cupy_backends.cuda.libs import nvrtc
    except Exception as exc:  # ImportError, or a broken install raising anything
        _unavailable(f"cupy does not import ({type(exc).__name__}: {exc})")
    try:
        version = nvrtc.getVersion()
        archs = nvrtc.getSupportedArchs()
    except Exception as exc:  # the libnvrtc shared library cannot be found or loaded
        _unavailable(f"libnvrtc cannot be loaded ({type(exc).__name__}: {exc})")
    return nvrtc, assemble_cupy_compiler_options, version, tuple(archs)


def _module_names():
    """Module names for parametrization; an unreadable registry becomes a failing test, not a crash."""
    try:
        from backends.cuda_sources import kernel_modules

        return [m.name for m in kernel_modules()]
    except Exception as exc:  # noqa: BLE001 -- reported by test_registry_loads
        return [f"<registry error: {type(exc).__name__}>"]


def _module(name):
    from backends.cuda_sources import kernel_modules

    for m in kernel_modules():
        if m.name == name:
            return m
    pytest.fail(f"backends.cuda_sources.kernel_modules() has no module {name!r}")


def test_registry_loads():
    from backends.cuda_sources import kernel_modules

    mods = kernel_modules()
    assert mods, "kernel_modules() lists no kernel module"
    names = [m.name for m in mods]
    assert len(set(names)) == len(names), f"duplicate module names: {names}"
    for m in mods:
        assert m.source.strip(), f"{m.path} is empty"
        assert m.name_expressions, f"{m.name}: no name expressions"
        assert len(set(m.name_expressions)) == len(m.name_expressions), f"{m.name}: duplicate name expressions"
        # Every template kernel in the file is instantiated: one that is not
        # would never be compiled, so never checked.
        declared = set(re.findall(
            r"template\s*<\s*typename\s+\w+\s*>\s*__global__\s+void\s+(?:__launch_bounds__\s*\([^)]*\)\s*)?(\w+)",
            _strip_comments(m.source),
        ))
        instantiated = {e.split("<", 1)[0] for e in m.name_expressions}
        assert declared <= instantiated, f"{m.path}: template kernels without a name expression: {sorted(declared - instantiated)}"


def _strip_comments(src):
    src = re.sub(r"/\*.*?\*/", " ", src, flags=re.S)
    return re.sub(r"//[^\n]*", " ", src)


def compile_options(assemble, library_options, arch):
    """What cupy.RawModule(options=library_options) hands NVRTC for ``arch``, plus the ptxas report."""
    opts = tuple(assemble(tuple(library_options)))
    return opts + (CUPY_FTZ, f"-arch={arch}", CUPY_EXEC_SPACE, PTXAS_VERBOSE)


def nvrtc_compile(nvrtc, source, filename, name_expressions, options):
    """Compile once; returns (ok, log, {expression: lowered name}, cubin bytes)."""
    prog = nvrtc.createProgram(source, filename, [], [])
    try:
        for expr in name_expressions:
            nvrtc.addNameExpression(prog, expr)
        try:
            nvrtc.compileProgram(prog, options)
            ok = True
        except nvrtc.NVRTCError:
            ok = False
        log = nvrtc.getProgramLog(prog)
        lowered, cubin = {}, b""
        if ok:
            for expr in name_expressions:
                try:
                    lowered[expr] = nvrtc.getLoweredName(prog, expr)
                except nvrtc.NVRTCError:
                    lowered[expr] = None
            cubin = nvrtc.getCUBIN(prog)
        return ok, log, lowered, cubin
    finally:
        nvrtc.destroyProgram(prog)


_ENTRY_RE = re.compile(r"Compiling entry function '([^']+)' for '(\w+)'")
_PROPS_RE = re.compile(r"Function properties for (\S+)")
_FRAME_RE = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_USED_RE = re.compile(r"Used (\d+) registers(.*)")
_SMEM_RE = re.compile(r"(\d+) bytes smem")


def parse_ptxas(log):
    """{function: {"entry": bool, "stack", "spill_stores", "spill_loads", "registers", "smem"}} from a -v log."""
    funcs = {}
    current_entry = current_props = None
    for line in log.splitlines():
        m = _ENTRY_RE.search(line)
        if m:
            current_entry = m.group(1)
            funcs.setdefault(current_entry, {})["entry"] = True
            continue
        m = _PROPS_RE.search(line)
        if m:
            current_props = m.group(1)
            funcs.setdefault(current_props, {}).setdefault("entry", False)
            continue
        m = _FRAME_RE.search(line)
        if m and current_props is not None:
            stack, stores, loads = (int(v) for v in m.groups())
            funcs[current_props].update(stack=stack, spill_stores=stores, spill_loads=loads)
            current_props = None
            continue
        m = _USED_RE.search(line)
        if m and current_entry is not None:
            info = funcs[current_entry]
            info["registers"] = int(m.group(1))
            s = _SMEM_RE.search(m.group(2))
            info["smem"] = int(s.group(1)) if s else 0
            current_entry = None
    return funcs


def serious_warnings(log):
    out = []
    for line in log.splitlines():
        if re.search(r"\bwarning\b", line, re.I) and not any(re.search(p, line) for p, _ in ALLOWED_WARNINGS):
            out.append(line.strip())
    return out


def check_module(toolchain, mod, arch):
    """Every problem found compiling ``mod`` for ``arch``, as a list of strings (empty = clean)."""
    nvrtc, assemble, _, archs = toolchain
    arch_number = int(arch.split("_")[1])
    if archs and arch_number not in archs:
        return [f"this NVRTC cannot target {arch} (supports {archs})"]
    options = compile_options(assemble, mod.options, arch)
    filename = os.path.basename(mod.path)
    ok, log, lowered, cubin = nvrtc_compile(nvrtc, mod.source, filename, mod.name_expressions, options)
    where = f"{filename} for {arch}"
    if not ok:
        return [f"{where}: NVRTC compile error; options {options}; log:\n{log}"]
    problems = [f"{where}: warning: {w}" for w in serious_warnings(log)]
    if not cubin:
        problems.append(f"{where}: no cubin produced")
    funcs = parse_ptxas(log)
    if not funcs:
        problems.append(f"{where}: no ptxas report in the log (did {PTXAS_VERBOSE} stop working?); log:\n{log}")
    for name, info in sorted(funcs.items()):
        if "stack" not in info:
            problems.append(f"{where}: {name}: ptxas printed no stack/spill line")
            continue
        if info["spill_stores"] or info["spill_loads"]:
            problems.append(
                f"{where}: {name}: spills to local memory "
                f"({info['spill_stores']} bytes spill stores, {info['spill_loads']} bytes spill loads)"
            )
        if info["stack"]:
            problems.append(f"{where}: {name}: {info['stack']} bytes stack frame (local memory)")
        if not info["entry"]:
            continue
        max_block = _max_block()
        if info.get("registers") is None:
            problems.append(f"{where}: {name}: ptxas printed no register count")
        elif info["registers"] * max_block > REGISTERS_PER_BLOCK:
            problems.append(
                f"{where}: {name}: {info['registers']} registers per thread cannot launch a block of "
                f"MAX_BLOCK={max_block} threads ({REGISTERS_PER_BLOCK} registers per block)"
            )
        if info.get("smem", 0) > STATIC_SMEM_LIMIT:
            problems.append(f"{where}: {name}: {info['smem']} bytes static shared memory (> 48 KiB)")
    entries = {n for n, i in funcs.items() if i["entry"]}
    for expr, low in lowered.items():
        if not low:
            problems.append(f"{where}: name expression {expr!r} has no lowered name")
        elif funcs and low not in entries:
            problems.append(f"{where}: {expr!r} (lowered {low}) was not compiled as an entry function")
    return problems


def _max_block():
    from backends import cuda_sources

    return int(getattr(cuda_sources, "MAX_BLOCK", 1024))


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("module_name", _module_names())
def test_module_compiles_cleanly(toolchain, module_name, arch):
    if module_name.startswith("<registry error"):
        test_registry_loads()  # raises with the real error
    mod = _module(module_name)
    problems = check_module(toolchain, mod, arch)
    assert not problems, "\n".join(problems)


# ------------------------------------------------------------- the checker


def test_check_catches_errors_spills_and_missing_names(toolchain):
    """The checker itself: a syntax error, a stack frame and a missing instantiation are all reported."""
    import types

    def mod(source, exprs):
        return types.SimpleNamespace(name="probe", path="/probe.cu", source=source, options=("--std=c++17",), name_expressions=exprs)

    good = "template <typename T> __global__ void k(T* a, int n) { int i = threadIdx.x; if (i < n) a[i] *= T(2); }"
    assert check_module(toolchain, mod(good, ("k<float>", "k<double>")), "sm_90") == []

    problems = check_module(toolchain, mod(good.replace("*= T(2);", "*= T(2)"), ("k<float>",)), "sm_90")
    assert len(problems) == 1 and "compile error" in problems[0]

    # A dynamically indexed local array lives on the stack (local memory).
    stacky = (
        "template <typename T> __global__ void k(T* a, const int* idx) {"
        " T buf[64]; for (int j = 0; j < 64; ++j) buf[idx[j] & 63] = a[j * blockDim.x + threadIdx.x];"
        " a[threadIdx.x] = buf[idx[threadIdx.x] & 63]; }"
    )
    problems = check_module(toolchain, mod(stacky, ("k<float>",)), "sm_80")
    assert any("stack frame" in p for p in problems), problems

    unused = "template <typename T> __global__ void k(T* a) { int unused = 3; a[0] = T(1); }"
    problems = check_module(toolchain, mod(unused, ("k<float>",)), "sm_90")
    assert any("warning" in p for p in problems), problems

    problems = check_module(toolchain, mod(good, ("nothere<float>",)), "sm_90")
    assert problems  # an expression naming no template is a compile error


def test_parse_ptxas_report():
    log = (
        "ptxas info    : 0 bytes gmem\n"
        "ptxas info    : Compiling entry function '_Z1kIfEvPT_i' for 'sm_90'\n"
        "ptxas info    : Function properties for _Z1kIfEvPT_i\n"
        "ptxas         .     16 bytes stack frame, 8 bytes spill stores, 4 bytes spill loads\n"
        "ptxas info    : Used 40 registers, used 1 barriers, 2048 bytes smem\n"
    )
    info = parse_ptxas(log)["_Z1kIfEvPT_i"]
    assert info == dict(entry=True, stack=16, spill_stores=8, spill_loads=4, registers=40, smem=2048)
