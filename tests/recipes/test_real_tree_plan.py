"""Opt-in (TORCHWIN_UPSTREAM_REPO): the build driver's --plan on the real tree of every release tag.

0.3's win-64 builds come from peterjc123/pytorch's commits (variants.yaml pytorch_commit_win): those
trees are read from TORCHWIN_FORK_REPO (a clone of the fork); without it they are skipped, saying so.

For each release in variants.yaml the tag's tree is written out of the local upstream repository with
`git ls-tree` + `git cat-file` (blobs the repository lacks are written empty and named in the output),
every submodule folder the build needs gets a placeholder file (submodule repositories are not part
of upstream's), and `build_driver.py --plan --json --platform P` must pass for every platform x CUDA
build the recipe renders for that release, against fake toolkit folders (CUDA with cuDNN, NvToolsExt,
an activated MSVC 14.11 on Windows): the source checks (declared version, submodules) are the real
ones, against the real tree; the host is faked at the edge (folders, a `nvcc` that prints its release).
"""

import json
import os
import subprocess
import sys

import pytest
import upstream_tree as up


def rendered_builds():
    """[(release, platform, cuda, cudnn, patches)] the recipe renders, each once."""
    from torchwin import recipes

    seen = []
    for variant in recipes.render([up.RECIPE], ["linux-64", "win-64"]):
        if variant.name != "pytorch":
            continue
        key = (str(variant.variant["pytorch_version"]), variant.subdir,
               str(variant.variant["cuda_compiler_version"]), str(variant.variant["cudnn"]),
               str(variant.variant.get("pytorch_patches") or ""))
        if key not in seen:
            seen.append(key)
    return seen


def touch(path, text=""):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def fake_host(root, platform, cuda):
    """Environment variables of a host with the toolchain a build of (platform, cuda) needs, as folders."""
    bin_dir = root / "bin"
    ninja = touch(bin_dir / "ninja", "#!/bin/sh\necho 1.8.2\n")
    ninja.chmod(0o755)
    prefix = root / "prefix"
    touch(prefix / "lib" / "python3.6" / "site-packages" / "ninja" / "__init__.py")
    env = {"PATH": f"{bin_dir}{os.pathsep}/usr/bin{os.pathsep}/bin", "PREFIX": str(prefix)}
    if platform == "win-64":
        env["LIBRARY_PREFIX"] = str(prefix / "Library")
        for name in ("mkl_intel_lp64_dll.lib", "mkl_intel_thread_dll.lib", "mkl_core_dll.lib"):
            touch(prefix / "Library" / "lib" / name)
    if cuda == "None":
        return env
    release = f"{cuda}.176"
    if platform == "win-64":
        home = root / "NVIDIA GPU Computing Toolkit" / "CUDA" / f"v{cuda}"
        touch(home / "bin" / "nvcc.exe")  # cannot run here: the driver reads version.txt
        touch(home / "lib" / "x64" / "cudnn.lib")
        nvtx = root / "NVIDIA Corporation" / "NvToolsExt"
        touch(nvtx / "lib" / "x64" / "nvToolsExt64_1.lib")
        touch(nvtx / "include" / "nvToolsExt.h")
        env.update({f"CUDA_PATH_V{cuda.replace('.', '_')}": str(home), "NVTOOLSEXT_PATH": str(nvtx),
                    "VCToolsVersion": "14.11.25503"})
        # 1.1.0's CMake links NvToolsExt from its fixed folder whatever NVTOOLSEXT_PATH says, so the driver
        # looks there too: under --plan, TORCHWIN_PLAN_PROGRAM_FILES stands for C:\Program Files.
        program_files = root / "Program Files"
        env["TORCHWIN_PLAN_PROGRAM_FILES"] = str(program_files)
        fixed = program_files / "NVIDIA Corporation" / "NvToolsExt"
        touch(fixed / "lib" / "x64" / "nvToolsExt64_1.lib")
        touch(fixed / "include" / "nvToolsExt.h")
    else:
        # The machine's gcc 5: the CMake of 0.4.1 on refuses gcc >= 6 with CUDA 9.0/9.1.
        touch(bin_dir / "gcc", "#!/bin/sh\necho 5.4.0\n").chmod(0o755)
        home = root / f"cuda-{cuda}"
        nvcc = touch(home / "bin" / "nvcc", f"#!/bin/sh\necho 'Cuda compilation tools, release {cuda}, V{release}'\n")
        nvcc.chmod(0o755)
        touch(home / "lib64" / "libcudnn.so")
        env["CUDA_HOME"] = str(home)
    touch(home / "version.txt", f"CUDA Version {release}\n")
    touch(home / "include" / "cudnn.h", "#define CUDNN_MAJOR 7\n#define CUDNN_MINOR 1\n")
    env["TORCHWIN_CUDNN_COMPILED"] = "7.1"
    return env


@pytest.fixture(scope="module")
def trees(tmp_path_factory):
    """{(release, platform's source): (tree folder, blobs written empty, submodule folders with placeholders)},
    made on first use: the tag's tree, or the fork's commit where that platform builds one."""
    up.upstream_repo()
    made = {}

    def tree(release, platform=None):
        facts = up.facts(release, platform)
        key = (release, facts["commit"])
        if key not in made:
            dest = tmp_path_factory.mktemp(f"v{release}-{facts['commit'][:7]}")
            missing = up.export_tree(up.repo_for(release, platform), facts["commit"], dest)
            made[key] = (dest, missing, up.fill_placeholders(dest, release, platform))
        return made[key]

    return tree


@pytest.mark.skipif(sys.platform == "win32", reason="fakes a Linux nvcc and a Windows folder as POSIX files")
@pytest.mark.parametrize("release", up.releases())
def test_driver_plan_passes_on_the_real_tree_for_every_build_of_the_release(release, trees, tmp_path):
    builds = [b for b in rendered_builds() if b[0] == release]
    assert builds, f"the recipe renders no build of {release}"
    failures = []
    for _, platform, cuda, cudnn, patches in builds:
        facts = up.facts(release, platform)
        if up.forked(release, platform) and not os.environ.get("TORCHWIN_FORK_REPO"):
            print(f"\nv{release} {platform} CUDA {cuda}: not checked, its tree is {facts['repository']}'s "
                  f"(set TORCHWIN_FORK_REPO to a clone of it)")
            continue
        tree, missing, placeholders = trees(release, platform)
        print(f"\nv{release} {platform} ({facts['repository']} at {facts['commit'][:10]}): {len(placeholders)} "
              f"submodule folders with placeholders; blobs missing, written empty: {sorted(missing) or 'none'}")
        for path in up.skipped(release):  # left empty, as the engine leaves it: the plan must accept that
            assert not any((tree / path).iterdir()), path
        env = fake_host(tmp_path / f"{platform}-{cuda}", platform, cuda)
        env.update({"SRC_DIR": str(tree), "RECIPE_DIR": str(up.RECIPE), "TORCHWIN_PYTORCH_VERSION": release,
                    "TORCHWIN_RELEASE": release, "TORCHWIN_BUILD_NUMBER": "1", "TORCHWIN_CUDA_VERSION": cuda,
                    "TORCHWIN_CUDNN": cudnn, "TORCHWIN_PATCHES": patches, "HOME": str(tmp_path),
                    "TORCHWIN_SOURCE_COMMIT": facts["commit"]})
        proc = subprocess.run([sys.executable, str(up.RECIPE / "build_driver.py"), "--plan", "--json",
                               "--platform", platform], env=env, capture_output=True, text=True,
                              cwd=tmp_path / f"{platform}-{cuda}")
        if proc.returncode != 0:
            failures.append(f"{platform} CUDA {cuda}: exit {proc.returncode}: {proc.stderr.strip()}")
            continue
        plan = json.loads(proc.stdout)
        assert (plan["release"], plan["platform"], plan["cuda"]) == (release, platform, cuda)
        assert plan["commands"][-1][1:3] == ["setup.py", "install"]
        if cuda != "None":
            assert plan["env"]["CUDA_HOME"].endswith(f"v{cuda}" if platform == "win-64" else f"cuda-{cuda}")
            assert plan["env"]["TORCH_CUDA_ARCH_LIST"]
            if platform == "win-64":
                assert plan["env"]["NVTOOLSEXT_PATH"]
        if release.startswith("0.3."):
            # 0.3: what its files read, nothing else; make on Linux (build_libs.sh), Ninja from the fork's .bat.
            assert not any(k.startswith("USE_") or k in ("NO_TEST", "NO_MKLDNN") for k in plan["env"]), plan["env"]
            assert plan["env"]["CMAKE_GENERATOR"] == ("Ninja" if platform == "win-64" else "Unix Makefiles")
            if platform == "win-64":
                assert plan["env"]["PYTORCH_BUILD_VERSION"] == f"{facts['declared_version']}+{facts['commit'][:7]}"
        print(f"  {platform:<8} CUDA {cuda:<4}: plan OK ({len(plan['env'])} variables, "
              f"{len(plan['commands'])} command(s))")
    assert not failures, "\n".join(failures)
