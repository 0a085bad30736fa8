"""Package test of recipes/torchvision: import it, run a transform and, where the release has them, its ops.

Environment (set by the recipe's test section):
    TORCHWIN_EXPECT_VERSION=V    torchvision.__version__ must be V (a local part like "+cpu" is ignored)
    TORCHWIN_EXPECT_VARIANT=...  cpu, or cudaX.Y: the pytorch under it must be that build, and from 0.3.0
                                 on torchvision's own ops must be compiled with (or without) CUDA
    TORCHWIN_REQUIRE_CUDA=1      the CUDA checks FAIL instead of SKIP when no GPU is visible

Checks: a Normalize transform on a tensor; nms and roi_align on the CPU (0.3.0+); no video reader
(0.5.0+: the recipe builds none); PNG and JPEG round trips through the image extension (0.8.0+); the
ops on the GPU, compared with the CPU results, for CUDA builds when a GPU is there. Prints PASS/FAIL/SKIP lines;
exit 0 when nothing failed, else 1. It runs under the variant's own Python: keep it Python 3.5.
"""

# ruff: noqa: UP031, BLE001
# %-formatting for Python 3.5; blind excepts turn whatever a broken build throws into a FAIL line.

import os
import sys
import traceback


def expected(environ):
    version = environ.get("TORCHWIN_EXPECT_VERSION", "")
    variant = environ.get("TORCHWIN_EXPECT_VARIANT", "")
    if variant and variant != "cpu" and not variant.startswith("cuda"):
        raise ValueError("TORCHWIN_EXPECT_VARIANT=%s: expected cpu or cudaX.Y" % variant)
    return version, variant, environ.get("TORCHWIN_REQUIRE_CUDA", "0") == "1"


def release(version):
    """(0, 3) of '0.3.0' and of '0.3.0+cpu'."""
    parts = version.split("+")[0].split(".")
    return int(parts[0]), int(parts[1])


def cuda_version_matches(have, want):
    """Whether the CUDA version `have` (torch.version.cuda) is the release `want` (X.Y): real builds
    report X.Y or X.Y.Z (upstream's 1.0.1/1.1.0 Linux wheels: 9.0.176).

    The same rule as cuda_version_matches() of recipes/pytorch/run_test.py, which the torchvision
    package test cannot import (each recipe ships only its own files);
    tests/recipes/test_torchvision.py keeps the two identical."""
    return have == want or (have or "").startswith(want + ".")


def check_versions(torch, torchvision, want_version, want_variant):
    got = torchvision.__version__.split("+")[0]
    if want_version and got != want_version:
        raise AssertionError("torchvision.__version__ is %s, expected %s" % (torchvision.__version__, want_version))
    cuda = getattr(torch.version, "cuda", None)
    if want_variant == "cpu" and cuda:
        raise AssertionError("a CPU build must sit on a CPU torch, but torch.version.cuda is %s" % cuda)
    if want_variant.startswith("cuda") and not cuda_version_matches(cuda, want_variant[len("cuda"):]):
        raise AssertionError("torch.version.cuda is %s, expected %s" % (cuda, want_variant[len("cuda"):]))
    return "torchvision %s on torch %s (CUDA %s)" % (torchvision.__version__, torch.__version__, cuda)


def check_transform(torch, torchvision):
    from torchvision import transforms

    image = torch.ones(3, 4, 4)
    out = transforms.Normalize(mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25])(image)
    if abs(float(out.min()) - 2.0) > 1e-6 or abs(float(out.max()) - 2.0) > 1e-6:
        raise AssertionError("Normalize gave values from %s to %s, expected 2.0" % (out.min(), out.max()))
    return "transforms.Normalize"


def run_ops(torch, ops, device):
    """nms keeps the best of two overlapping boxes and the far one; roi_align averages a constant map."""
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 11.0, 11.0], [50.0, 50.0, 60.0, 60.0]], device=device)
    scores = torch.tensor([0.9, 0.8, 0.7], device=device)
    keep = ops.nms(boxes, scores, 0.5).cpu().tolist()
    if keep != [0, 2]:
        raise AssertionError("nms on %s kept %s, expected [0, 2]" % (device, keep))
    features = torch.full((1, 1, 8, 8), 3.0, device=device)
    rois = torch.tensor([[0.0, 1.0, 1.0, 6.0, 6.0]], device=device)
    pooled = ops.roi_align(features, rois, (2, 2), 1.0, 2)
    if tuple(pooled.shape) != (1, 1, 2, 2) or abs(float(pooled.min()) - 3.0) > 1e-5:
        raise AssertionError("roi_align on %s gave %s" % (device, pooled))
    return keep, pooled.cpu()


def ops_cuda_version(torch, version):
    """(the CUDA version torchvision's C++ ops were built with as X.Y, or None; what said so).

    0.3-0.4's _C is a Python extension with CUDA_VERSION (e.g. 9000) only in CUDA builds. From 0.5 on
    _C is a torch operator library, loaded by `import torchvision`, whose _cuda_version() is e.g. 10020,
    or -1 without CUDA. It is never imported as a module from 0.5 on: on Linux that is an ImportError (no
    PyInit__C), on Windows 0.5-0.8 a SystemError (its PyInit__C returns NULL by design).
    """
    if release(version) < (0, 5):
        from torchvision import _C

        number, how = getattr(_C, "CUDA_VERSION", None), "torchvision._C.CUDA_VERSION"
    else:
        number, how = torch.ops.torchvision._cuda_version(), "torch.ops.torchvision._cuda_version()"
        number = None if number == -1 else number
    if number is None:
        return None, "%s says no CUDA" % how
    number = int(number)
    return "%d.%d" % (number // 1000, number % 1000 // 10), "%s is %d" % (how, number)


def check_ops(torch, torchvision, want_variant):
    from torchvision import ops

    cuda, how = ops_cuda_version(torch, torchvision.__version__)
    if want_variant == "cpu" and cuda:
        raise AssertionError("a CPU build has CUDA ops (%s)" % how)
    if want_variant.startswith("cuda"):
        if not cuda:
            raise AssertionError("a CUDA build has no CUDA ops (%s)" % how)
        if not cuda_version_matches(cuda, want_variant[len("cuda"):]):
            raise AssertionError("the ops were built with CUDA %s (%s), expected %s"
                                 % (cuda, how, want_variant[len("cuda"):]))
    run_ops(torch, ops, "cpu")
    return "ops.nms and ops.roi_align on the CPU (%s)" % how


def check_no_video_reader(torch, torchvision):
    """0.5.0 on build torchvision.video_reader when setup.py finds ffmpeg; the recipe never lets it."""
    from torchvision import io

    if getattr(io, "_HAS_VIDEO_OPT", False):
        raise AssertionError("torchvision.io._HAS_VIDEO_OPT is True: a video reader was built (linked to an ffmpeg "
                             "the package does not declare)")
    return "no video reader (torchvision.io._HAS_VIDEO_OPT is False)"


def check_image(torch, torchvision):
    """0.8.0 on: the image extension, built against the host's libpng and libjpeg, round-trips a picture.

    0.8.x's torchvision.io exports encode_png, encode_jpeg and decode_image (which tells PNG from JPEG),
    not decode_png/decode_jpeg: those live in torchvision.io.image, where every release from 0.8 has all four.
    """
    from torchvision import io
    from torchvision.io import image as io_image

    if not getattr(io_image, "_HAS_IMAGE_OPT", True):
        raise AssertionError("torchvision.io.image._HAS_IMAGE_OPT is False: the image extension did not load")
    image = torch.arange(0, 48, dtype=torch.uint8).reshape(3, 4, 4)
    png = io.encode_png(image)
    for name, decode in (("decode_png", io_image.decode_png), ("decode_image", io.decode_image)):
        out = decode(png)
        if not torch.equal(out, image):
            raise AssertionError("PNG round trip through %s changed the image: %s" % (name, out))
    jpeg = io.encode_jpeg(image, 95)
    for name, decode in (("decode_jpeg", io_image.decode_jpeg), ("decode_image", io.decode_image)):
        out = decode(jpeg)
        if tuple(out.shape) != (3, 4, 4):
            raise AssertionError("JPEG round trip through %s gave shape %s, expected (3, 4, 4)"
                                 % (name, tuple(out.shape)))
    return "io.encode_png/encode_jpeg, io.image.decode_png/decode_jpeg and io.decode_image"


def check_ops_cuda(torch, torchvision):
    from torchvision import ops

    keep, pooled = run_ops(torch, ops, "cuda")
    want_keep, want_pooled = run_ops(torch, ops, "cpu")
    if keep != want_keep or float((pooled - want_pooled).abs().max()) > 1e-5:
        raise AssertionError("GPU and CPU results differ: %s / %s" % (pooled, want_pooled))
    return "ops.nms and ops.roi_align on %s, equal to the CPU's" % torch.cuda.get_device_name(0)


def main(environ=None):
    environ = os.environ if environ is None else environ
    try:
        want_version, want_variant, require_cuda = expected(environ)
    except ValueError as exc:
        print("error: %s" % exc)
        return 2
    results = []

    def record(status, text):
        results.append(status)
        print("%s %s" % (status, text))

    try:
        import torch
        import torchvision
    except Exception:
        record("FAIL", "import: %s" % traceback.format_exc().strip().splitlines()[-1])
        return 1
    checks = [("versions", lambda: check_versions(torch, torchvision, want_version, want_variant)),
              ("transform", lambda: check_transform(torch, torchvision))]
    has_ops = release(torchvision.__version__) >= (0, 3)
    if has_ops:
        checks.append(("ops", lambda: check_ops(torch, torchvision, want_variant)))
    if release(torchvision.__version__) >= (0, 5):
        checks.append(("video reader", lambda: check_no_video_reader(torch, torchvision)))
    if release(torchvision.__version__) >= (0, 8):
        checks.append(("image", lambda: check_image(torch, torchvision)))
    for name, run in checks:
        try:
            record("PASS", run())
        except Exception as exc:
            record("FAIL", "%s: %s" % (name, exc))
    if want_variant.startswith("cuda") and has_ops:
        if torch.cuda.is_available():
            try:
                record("PASS", check_ops_cuda(torch, torchvision))
            except Exception as exc:
                record("FAIL", "ops on the GPU: %s" % exc)
        elif require_cuda:
            record("FAIL", "ops on the GPU: no GPU visible and TORCHWIN_REQUIRE_CUDA=1")
        else:
            record("SKIP", "ops on the GPU: no GPU visible")
    print("%d passed, %d failed, %d skipped" % (results.count("PASS"), results.count("FAIL"), results.count("SKIP")))
    return 1 if "FAIL" in results else 0


if __name__ == "__main__":
    sys.exit(main())
