"""digitloc.runtime and digitloc-run: predictions, every source kind, every bad input."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import click
import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from digitloc.runtime.cli import main
from digitloc.runtime.contract import ContractError
from digitloc.runtime.detector import Detector, ProviderError
from digitloc.runtime.imageio import ImageError, header_size
from digitloc.runtime.preprocess import preprocess


def test_runtime_imports_no_training_framework() -> None:
    code = ("import sys, digitloc.runtime, digitloc.runtime.detector, digitloc.runtime.cli, digitloc.runtime.sources,"
            " digitloc.runtime.cpuinfo, digitloc.runtime.openvino_backend;"
            "bad = [m for m in ('tensorflow', 'keras', 'tf2onnx', 'onnx', 'matplotlib', 'openvino') if m in sys.modules];"
            "print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def _photo(path: Path, size: tuple[int, int] = (60, 90)) -> Path:
    img = np.full((*size, 3), 30, np.uint8)
    cv2.rectangle(img, (40, 10), (48, 50), (240, 240, 240), -1)
    cv2.imwrite(str(path), img)
    return path


def test_keras_and_onnx_give_the_same_answer_through_their_own_paths(tiny_run: Path, tiny_onnx: Path,
                                                                      tmp_path: Path) -> None:
    from digitloc.train.model import keras_predict, load_model

    files = [_photo(tmp_path / f"{i}.png", (40 + 10 * i, 70 + 15 * i)) for i in range(4)]
    keras_model = load_model(tiny_run / "model.keras")
    detector = Detector(tiny_onnx, provider="cpu", refine=False)  # one pass: compared with Keras
    for f in files:
        image = cv2.imread(str(f))
        boxes, probs = keras_predict(keras_model, preprocess(image, (32, 32))[None])
        det = detector.predict(f)
        assert det.digit == int(probs[0].argmax())
        np.testing.assert_allclose(det.probs, probs[0], atol=1e-4)
        h, w = image.shape[:2]
        x1, x2 = sorted(boxes[0][0::2] * w)
        y1, y2 = sorted(boxes[0][1::2] * h)
        np.testing.assert_allclose(det.bbox, np.clip([x1, y1, x2, y2], 0, [w, h, w, h]), atol=0.01 * max(w, h))


def test_paths_arrays_and_odd_pixel_formats(tiny_onnx: Path, tmp_path: Path) -> None:
    detector = Detector(tiny_onnx, provider="cpu")
    path = _photo(tmp_path / "a.png")
    bgr = cv2.imread(str(path))
    from_path, from_array = detector.predict(path), detector.predict(bgr)
    assert from_path == from_array
    assert 0 <= from_path.bbox[0] <= from_path.bbox[2] <= 90 and 0 <= from_path.bbox[1] <= from_path.bbox[3] <= 60
    gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    bgra = cv2.cvtColor(bgr, cv2.COLOR_BGR2BGRA)
    deep = bgr.astype(np.uint16) * 257
    for name, img in (("gray.png", gray), ("bgra.png", bgra), ("deep.png", deep)):
        cv2.imwrite(str(tmp_path / name), img)
        det = detector.predict(tmp_path / name)
        assert det.digit == from_path.digit and np.allclose(det.bbox, from_path.bbox, atol=2.0), name


def test_concurrent_calls_match_sequential_ones(tiny_onnx: Path, tmp_path: Path) -> None:
    detector = Detector(tiny_onnx, provider="cpu", threads=1)
    images = [np.random.default_rng(i).integers(0, 255, (50, 80, 3), dtype=np.uint8) for i in range(16)]
    expected = [detector.predict(im) for im in images]
    results: dict[int, object] = {}

    def work(k: int) -> None:
        for _ in range(5):
            results[k] = detector.predict_batch(images[k::4])

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k in range(4):
        assert results[k] == expected[k::4]


def test_model_and_provider_errors(tiny_onnx: Path, tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    other = tmp_path / "other.onnx"
    onnx.save(helper.make_model(graph), str(other))
    with pytest.raises(ContractError, match="not a digitloc model .metadata lacks digitloc.contract_version"):
        Detector(other, provider="cpu")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"nonsense")
    with pytest.raises(ContractError, match="not a loadable ONNX model"):
        Detector(junk, provider="cpu")
    with pytest.raises(FileNotFoundError):
        Detector(tmp_path / "none.onnx")
    # Asking for CUDA either gets CUDA or fails loudly: never a quiet fall back to the CPU.
    try:
        det = Detector(tiny_onnx, provider="cuda")
    except ProviderError as exc:
        assert "CUDA" in str(exc)
    else:
        assert det.provider == "CUDAExecutionProvider"
    with pytest.raises(ProviderError, match="unknown provider"):
        Detector(tiny_onnx, provider="tpu")
    # "auto" takes CUDA exactly when this onnxruntime offers it; on a CPU it probes OpenVINO only where
    # OpenVINO is installed (tests/test_engines.py), else it is onnxruntime's CPU provider.
    import importlib.util

    import onnxruntime as ort

    cuda = "CUDAExecutionProvider" in ort.get_available_providers()
    auto = Detector(tiny_onnx, provider="auto")
    if cuda:
        assert auto.provider == "CUDAExecutionProvider"
    elif importlib.util.find_spec("openvino"):
        assert auto.provider.startswith("auto (onnxruntime, openvino")
    else:
        assert auto.provider == "CPUExecutionProvider"


def test_pixel_limit_is_checked_before_decoding(tmp_path: Path) -> None:
    big = tmp_path / "big.png"
    cv2.imwrite(str(big), np.zeros((300, 400), np.uint8))
    assert header_size(big.read_bytes()) == (400, 300)
    jpg = tmp_path / "big.jpg"
    cv2.imwrite(str(jpg), np.zeros((30, 40, 3), np.uint8))
    assert header_size(jpg.read_bytes()) == (40, 30)
    from digitloc.runtime.imageio import read_image_file

    with pytest.raises(ImageError, match="exceeds the 1,000-pixel limit"):
        read_image_file(big, max_pixels=1000)


def _video(path: Path, frames: int = 6, size: tuple[int, int] = (64, 48)) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, size)
    for i in range(frames):
        img = np.full((size[1], size[0], 3), 20 * i, np.uint8)
        cv2.rectangle(img, (20 + i, 8), (30 + i, 40), (255, 255, 255), -1)
        writer.write(img)
    writer.release()
    return path


def test_cli_on_every_source_kind(tiny_onnx: Path, tmp_path: Path) -> None:
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    _photo(src / "a.png", (60, 90))
    _photo(src / "sub" / "b.jpg", (45, 70))
    _photo(tmp_path / "c.png", (33, 50))
    _video(tmp_path / "clip.mp4")
    out = tmp_path / "out"
    result = CliRunner().invoke(main, [str(src), str(tmp_path / "c*.png"), str(tmp_path / "clip.mp4"),
                                       "--model", str(tiny_onnx), "--provider", "cpu", "--json",
                                       "--output", str(out), "--batch", "4"])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 3 + 6
    by_source = {(r["source"], r["frame"]) for r in lines}
    assert (str(src / "a.png"), None) in by_source and (str(tmp_path / "clip.mp4"), 5) in by_source
    for r in lines:
        assert set(r) == {"source", "frame", "number", "digits", "digit", "confidence", "bbox", "probs", "latency_ms"}
        assert abs(sum(r["probs"]) - 1) < 1e-3
    a = next(r for r in lines if r["source"].endswith("a.png"))
    assert 0 <= a["bbox"][0] <= a["bbox"][2] <= 90 and 0 <= a["bbox"][1] <= a["bbox"][3] <= 60
    # Outputs keep their paths relative to the folder the inputs share (here tmp_path).
    assert cv2.imread(str(out / "in" / "a.png")).shape == (60, 90, 3)
    assert cv2.imread(str(out / "in" / "sub" / "b.jpg")).shape == (45, 70, 3)
    assert cv2.imread(str(out / "c.png")).shape == (33, 50, 3)
    cap = cv2.VideoCapture(str(out / "clip.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 6
    assert (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))) == (64, 48)
    assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(10.0)
    cap.release()
    assert "9 frames predicted, 0 failed" in result.stderr
    # A second run without --force keeps what exists and says so.
    again = CliRunner().invoke(main, [str(tmp_path / "c.png"), "--model", str(tiny_onnx), "--output", str(out)])
    assert again.exit_code == 1 and "already exists (use --force" in again.stderr


def test_cli_reports_bad_inputs_and_goes_on(tiny_onnx: Path, tmp_path: Path) -> None:
    good = _photo(tmp_path / "good.png")
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "text.png").write_text("not an image at all")
    (tmp_path / "trunc.png").write_bytes(good.read_bytes()[:60])
    (tmp_path / "novideo.mp4").write_bytes(b"\x00" * 100)
    _video(tmp_path / "zero.avi", frames=0)
    cv2.imwrite(str(tmp_path / "huge.png"), np.zeros((200, 200), np.uint8))
    args = [str(good), str(tmp_path / "empty.png"), str(tmp_path / "text.png"), str(tmp_path / "trunc.png"),
            str(tmp_path / "novideo.mp4"), str(tmp_path / "zero.avi"), str(tmp_path / "huge.png"),
            str(tmp_path / "missing.png"), "camera:97", "--model", str(tiny_onnx), "--json", "--max-pixels", "20000"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert [r["source"] for r in lines] == [str(good)]
    err = result.stderr
    assert "empty.png: empty file" in err
    assert "text.png: not an image, or a corrupt one" in err
    assert "trunc.png: not an image, or a corrupt one" in err
    assert "novideo.mp4: cannot open video" in err or "novideo.mp4: video has no frames" in err
    assert "zero.avi" in err
    assert "huge.png: 200x200 image exceeds the 20,000-pixel limit" in err
    assert "missing.png: no such file or folder" in err
    assert "camera:97: cannot open camera" in err
    assert "1 frames predicted, 8 failed" in err


def test_cli_model_errors_and_providers(tmp_path: Path) -> None:
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"x")
    result = CliRunner().invoke(main, [str(tmp_path), "--model", str(junk)])
    assert result.exit_code == 2 and "not a loadable ONNX model" in result.stderr
    listed = CliRunner().invoke(main, ["--list-providers"])
    assert listed.exit_code == 0 and "CPUExecutionProvider" in listed.stdout


def test_every_format_is_peeked_before_decoding_or_refused(tmp_path: Path) -> None:
    """WebP (lossless, lossy), TIFF and PNM headers give their size; a bomb is refused unread;
    a format whose header is not read here (Radiance HDR, Sun raster) is refused, not decoded blind."""
    from digitloc.runtime.imageio import decode_image

    img = np.zeros((30, 40, 3), np.uint8)
    for ext, params in ((".webp", [cv2.IMWRITE_WEBP_QUALITY, 101]), (".webp", [cv2.IMWRITE_WEBP_QUALITY, 80]),
                        (".tif", []), (".ppm", []), (".png", []), (".bmp", []), (".gif", [])):
        data = cv2.imencode(ext, img, params)[1].tobytes()
        assert header_size(data) == (40, 30), ext
        assert decode_image(data, "x" + ext).shape[:2] == (30, 40)
        with pytest.raises(ImageError, match="exceeds the 1,000-pixel limit"):
            decode_image(data, "x" + ext, max_pixels=1000)
    # A TIFF bomb: a valid header that claims 100000 x 100000 pixels.
    bomb = b"II*\x00\x08\x00\x00\x00\x02\x00" + bytes.fromhex("0001 0400 0100 0000 a086 0100") \
        + bytes.fromhex("0101 0400 0100 0000 a086 0100") + b"\0" * 64
    assert header_size(bomb) == (100_000, 100_000)
    with pytest.raises(ImageError, match="100000x100000 image exceeds"):
        decode_image(bomb, "bomb.tif")
    # A lossy WebP header claiming 16000 x 16000 (VP8 frame header).
    vp8 = b"RIFF\0\0\0\0WEBPVP8 \0\0\0\0" + b"\0\0\0" + b"\x9d\x01\x2a" + struct_pack(16000, 16000) + b"\0" * 32
    assert header_size(vp8) == (16000, 16000)
    with pytest.raises(ImageError, match="16000x16000 image exceeds"):
        decode_image(vp8, "big.webp")
    for ext in (".hdr", ".ras"):
        data = cv2.imencode(ext, img)[1].tobytes()
        with pytest.raises(ImageError, match="not an image, or a corrupt one .accepted: PNG"):
            decode_image(data, "x" + ext)


def struct_pack(w: int, h: int) -> bytes:
    import struct

    return struct.pack("<HH", w, h)


def test_tiny_images_and_float_arrays_get_a_clear_error(tiny_onnx: Path, tmp_path: Path) -> None:
    detector = Detector(tiny_onnx, provider="cpu")
    one = tmp_path / "one.png"
    cv2.imwrite(str(one), np.zeros((1, 1, 3), np.uint8))
    with pytest.raises(ImageError, match="one.png: 1x1 image is below the 8-pixel minimum side"):
        detector.predict(one)
    with pytest.raises(ImageError, match="7x40 image is below the 8-pixel minimum side"):
        detector.predict(np.zeros((40, 7, 3), np.uint8))
    bgr = cv2.imread(str(_photo(tmp_path / "a.png")))
    # A float array in 0..1 is the same photo as its uint8 form; one in 0..255 is refused, not read as white.
    assert detector.predict(bgr.astype(np.float32) / 255.0).digit == detector.predict(bgr).digit
    with pytest.raises(ImageError, match="float image with values 30..240; float images must be 0..1"):
        detector.predict(bgr.astype(np.float32))
    with pytest.raises(ImageError, match="float images must be 0..1"):
        detector.predict(np.full((20, 20), np.nan, np.float32))
    result = CliRunner().invoke(main, [str(one), "--model", str(tiny_onnx)])
    assert result.exit_code == 1 and "error: " + str(one) + ": 1x1 image is below" in result.stderr


def _wrong_shape_model(tiny_onnx: Path, path: Path, declared: list) -> Path:
    """A model with the digitloc metadata and the right names, but outputs of shape [N, 3]."""
    import onnx
    from onnx import TensorProto, helper

    nodes = [helper.make_node("Cast", ["image"], ["f"], to=TensorProto.FLOAT),
             helper.make_node("ReduceMean", ["f", "axes"], ["bbox"], keepdims=0),
             helper.make_node("Identity", ["bbox"], ["digit"])]
    axes = helper.make_tensor("axes", TensorProto.INT64, [2], [1, 2])
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("image", TensorProto.UINT8, ["N", 32, 32, 3])],
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, declared) for n in ("bbox", "digit")],
                              initializer=[axes])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    helper.set_model_props(model, {p.key: p.value for p in onnx.load(str(tiny_onnx)).metadata_props})
    onnx.save(model, str(path))
    return path


def test_wrong_output_shapes_are_a_contract_error(tiny_onnx: Path, tmp_path: Path) -> None:
    declared = _wrong_shape_model(tiny_onnx, tmp_path / "declared.onnx", ["N", 3])
    with pytest.raises(ContractError, match="output 'bbox' has shape \\['N', 3\\], the contract needs \\[N, 4\\]"):
        Detector(declared, provider="cpu")
    result = CliRunner().invoke(main, [str(_photo(tmp_path / "a.png")), "--model", str(declared)])
    assert result.exit_code == 2 and result.stderr.count("\n") == 1 and "error: " in result.stderr
    detector = Detector(tiny_onnx, provider="cpu")  # a shape that shows only when the model runs

    class Session:
        def __getattr__(self, name: str) -> object:
            return getattr(real, name)

        def run(self, names: list, feeds: dict) -> list:
            boxes, probs = real.run(names, feeds)
            return [boxes[:, :3], probs]

    real = detector.session
    detector.session = Session()
    with pytest.raises(ContractError, match="output 'bbox' has shape \\[1, 3\\], the contract needs"):
        detector.predict(np.zeros((32, 32, 3), np.uint8))


def test_outputs_are_planned_before_the_first_write(tiny_onnx: Path, tmp_path: Path) -> None:
    """Same file names in two folders keep apart; a clash is an error, never an overwrite; the output
    folder inside an input folder is not read back; an output folder that cannot be made is one line."""
    for folder, size in (("a", (40, 60)), ("b", (50, 80))):
        (tmp_path / folder).mkdir()
        _photo(tmp_path / folder / "1.png", size)
    out = tmp_path / "out"
    model = ["--model", str(tiny_onnx), "--provider", "cpu"]
    result = CliRunner().invoke(main, [str(tmp_path / "a" / "1.png"), str(tmp_path / "b" / "1.png"), "--output",
                                       str(out), *model])
    assert result.exit_code == 0, result.output
    assert cv2.imread(str(out / "a" / "1.png")).shape[:2] == (40, 60)
    assert cv2.imread(str(out / "b" / "1.png")).shape[:2] == (50, 80)
    # 1.gif and 1.png would both be written as 1.png (a GIF is written as PNG): the second is an error.
    cv2.imwrite(str(tmp_path / "a" / "1.gif"), np.zeros((20, 20, 3), np.uint8))
    result = CliRunner().invoke(main, [str(tmp_path / "a"), "-o", str(tmp_path / "out2"), *model])
    assert result.exit_code == 1
    assert f"{tmp_path / 'a' / '1.png'}: its output {tmp_path / 'out2' / '1.png'} is also {tmp_path / 'a' / '1.gif'}'s" \
        in result.stderr and "already exists" not in result.stderr
    assert "2 frames predicted, 1 failed" in result.stderr
    assert cv2.imread(str(tmp_path / "out2" / "1.png")).shape[:2] == (20, 20)  # the first one's, not overwritten
    # The output folder inside the input folder: three runs read only the two photos, never their outputs.
    for _ in range(3):
        result = CliRunner().invoke(main, [str(tmp_path / "b"), "--output", str(tmp_path / "b" / "out"), "--force",
                                           "--json", *model])
        assert result.exit_code == 0, result.output
        assert [json.loads(line)["source"] for line in result.stdout.splitlines()] == [str(tmp_path / "b" / "1.png")]
    assert not (tmp_path / "b" / "out" / "out").exists()
    # An output folder that cannot be made: one error line, exit 2, no traceback.
    (tmp_path / "file").write_text("x")
    for bad in (tmp_path / "file" / "out", Path("/proc/digitloc-out")):
        result = CliRunner().invoke(main, [str(tmp_path / "a" / "1.png"), "--output", str(bad), *model])
        assert result.exit_code == 2 and isinstance(result.exception, SystemExit)  # fail(..., 2), not a traceback
        assert f"error: {bad}: cannot write there" in result.stderr and "Traceback" not in result.output


def test_sigterm_during_a_video_leaves_no_temporary_file(tiny_onnx: Path, tmp_path: Path) -> None:
    import os
    import signal
    import time

    video = tmp_path / "long.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, (96, 64))
    for i in range(3000):
        writer.write(np.full((64, 96, 3), i % 200, np.uint8))
    writer.release()
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "digitloc.runtime.cli", str(video), "--model", str(tiny_onnx),
                             "--provider", "cpu", "--batch", "1", "--output", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, "DIGITLOC_PROGRESS": "0"})
    deadline = time.time() + 60
    while time.time() < deadline and not list(out.glob(".long.*.mp4")) and proc.poll() is None:
        time.sleep(0.01)
    assert list(out.glob(".long.*.mp4")), "the run ended before its temporary video appeared"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 128 + signal.SIGTERM
    assert "error: terminated; unfinished outputs removed" in err.decode()
    assert list(out.iterdir()) == []


def test_a_sigterm_while_the_temporary_video_is_made_still_removes_it(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The kernel may hand a process's SIGTERM to another thread (onnxruntime's, FFmpeg's) while the main thread
    makes the temporary video: the stop must still wait until the video knows its file, so close() removes it."""
    import os
    import signal
    import threading
    import time

    from digitloc.runtime import cli as runtime_cli

    go, sent = threading.Event(), threading.Event()

    def killer() -> None:
        if go.wait(10):
            os.kill(os.getpid(), signal.SIGTERM)
            sent.set()

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()  # made before the video, as onnxruntime's threads are: it does not block SIGTERM
    real = runtime_cli.atomic_path

    class StoppedWhileMade:
        def __init__(self, *args: object, **kwargs: object) -> None:
            self.ctx = real(*args, **kwargs)

        def __enter__(self) -> Path:
            path = self.ctx.__enter__()
            go.set()
            assert sent.wait(10)
            for _ in range(200):  # a handler that is not held runs here, before the video knows its file
                time.sleep(0.001)
            return path

        def __exit__(self, *exc: object) -> bool | None:
            return self.ctx.__exit__(*exc)

    def stop(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    monkeypatch.setattr(runtime_cli, "atomic_path", StoppedWhileMade)
    previous = signal.signal(signal.SIGTERM, stop)
    try:
        video = runtime_cli.VideoOut(tmp_path / "v.mp4", 25.0)
        with pytest.raises(SystemExit):
            video.write(np.zeros((32, 48, 3), np.uint8))
        assert video.writer is not None  # the stop came after the file was known
        video.close(ok=False)
    finally:
        signal.signal(signal.SIGTERM, previous)
        thread.join(10)
    assert list(tmp_path.iterdir()) == []


def test_openvino_provider_serves_the_same_file(tiny_onnx: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    real_import = builtins.__import__

    def no_openvino(name: str, *args, **kwargs):
        if name == "openvino" or name.startswith("openvino."):
            raise ImportError("No module named 'openvino'")
        return real_import(name, *args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(builtins, "__import__", no_openvino)
        with pytest.raises(ProviderError, match=r"digitloc\[openvino\]"):
            Detector(tiny_onnx, provider="openvino")
    pytest.importorskip("openvino")
    ours, theirs = Detector(tiny_onnx, provider="cpu"), Detector(tiny_onnx, provider="openvino")
    assert theirs.provider == "OpenVINO-CPU" and theirs.input_size == ours.input_size
    photos = [np.random.default_rng(i).integers(0, 255, (40 + i, 50, 3)).astype(np.uint8) for i in range(3)]
    for a, b in zip(ours.predict_batch(photos), theirs.predict_batch(photos), strict=True):
        assert a.digit == b.digit
        np.testing.assert_allclose(a.bbox, b.bbox, atol=0.05)
    assert theirs.predict(photos[0]).digit == ours.predict(photos[0]).digit  # another batch size


def test_sessions_do_not_spin_and_take_the_thread_count() -> None:
    from digitloc.runtime.detector import session_options

    options = session_options(3)
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert options.intra_op_num_threads == 3 and session_options().intra_op_num_threads == 0


def test_shared_options_are_declared_once() -> None:
    # --provider of digitloc-run, digitloc-serve and digitloc-bench startup: the Detector's choices, with help;
    # digitloc-bench latency's --providers names the same onnxruntime providers.
    from digitloc.benchmarks.cli import main as bench
    from digitloc.runtime.detector import PROVIDER_CHOICES, PROVIDERS
    from digitloc.serve.cli import main as serve

    def option(command: click.Command, name: str) -> click.Option:
        return next(p for p in command.params if p.name == name)

    for command in (main, serve, bench.commands["startup"]):
        provider = option(command, "provider")
        assert tuple(provider.type.choices) == PROVIDER_CHOICES and "auto" in provider.help
        assert option(command, "model").help == "ONNX model (default: the shipped one)."
    assert ", ".join(PROVIDERS) in option(bench.commands["latency"], "providers").help
    assert option(main, "output").opts == ["-o", "--output"]
    assert option(main, "threads").help == option(bench.commands["latency"], "threads").help


def test_one_prediction_record() -> None:
    # digitloc-run --json and digitloc-serve both write Detection.to_dict: context first, latency last.
    from digitloc.runtime.detector import Detection

    det = Detection(3, 0.912345678, (1.234, 2.0, 30.5, 40.0), tuple([0.1] * 10))
    record = det.to_dict(12.34567, source="x.png", frame=None)
    assert list(record) == ["source", "frame", "number", "digits", "digit", "confidence", "bbox", "probs", "latency_ms"]
    assert record["latency_ms"] == 12.346 and record["bbox"] == [1.23, 2.0, 30.5, 40.0]
    assert record["confidence"] == 0.912346 and "latency_ms" not in det.to_dict()


def test_summary_table_and_json_lines_in_a_file(tiny_onnx: Path, tmp_path: Path) -> None:
    # What `make demo` runs: a table per photo on stdout, the JSON lines (photos and video frames) in a file.
    (tmp_path / "in").mkdir()
    _photo(tmp_path / "in" / "a.png", (60, 90))
    _video(tmp_path / "in" / "clip.mp4")
    jsonl = tmp_path / "out" / "predictions.jsonl"
    args = [str(tmp_path / "in"), "--model", str(tiny_onnx), "--provider", "cpu", "--summary", "--json-out", str(jsonl)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert len(records) == 1 + 6 and not any(line.startswith("{") for line in result.stdout.splitlines())
    photo = next(r for r in records if r["frame"] is None)
    header, row = result.stdout.splitlines()[:2]
    assert header.split() == ["file", "number", "digit", "confidence", "box", "(x1,", "y1,", "x2,", "y2)"]
    name, number, digit, confidence, *box = row.replace(",", "").split()
    assert (name, int(digit), float(confidence)) == ("a.png", photo["digit"], round(photo["confidence"], 3))
    assert number == photo["number"] == str(photo["digit"])
    assert [float(v) for v in box] == [round(v) for v in photo["bbox"]]
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 2 and f"error: {jsonl}: already exists" in again.output


def test_open_session_is_the_one_way_to_a_session_and_refuses_a_fallback(tiny_onnx: Path) -> None:
    import onnxruntime as ort

    from digitloc.runtime.detector import open_session

    session = open_session(tiny_onnx)
    assert session.get_providers()[0] == "CPUExecutionProvider" and session.get_inputs()[0].name == "image"
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        with pytest.raises(ProviderError, match="cuda was asked for"):
            open_session(tiny_onnx, "cuda")


@pytest.mark.parametrize("shape", [(90, 200, 3), (90, 200, 4), (90, 200), (40, 30, 3), (1000, 3000, 3)])
def test_an_8_bit_photo_is_resized_first_with_the_same_pixels(shape: tuple[int, ...]) -> None:
    from digitloc.runtime.preprocess import preprocess, resize_rgb, to_rgb_uint8

    photo = np.random.default_rng(0).integers(0, 256, shape).astype(np.uint8)
    for size in ((64, 128), (64, 64)):
        assert np.array_equal(preprocess(photo, size), resize_rgb(to_rgb_uint8(photo), size))


def test_spinning_is_off_unless_asked_for(tiny_onnx: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Off by default (a detector beside other work must not fight it for the cores); --spin reaches
    # the onnxruntime session through digitloc-run and the Detector.
    import digitloc.runtime.detector as detector_module

    key = "session.intra_op.allow_spinning"
    assert detector_module.session_options().get_session_config_entry(key) == "0"
    assert detector_module.session_options(spin=True).get_session_config_entry(key) == "1"
    seen: list[str] = []
    real = detector_module.session_options

    def spy(threads: int | None = None, spin: bool = False) -> object:
        options = real(threads, spin)
        seen.append(options.get_session_config_entry(key))
        return options

    monkeypatch.setattr(detector_module, "session_options", spy)
    cv2.imwrite(str(tmp_path / "a.png"), np.full((40, 80, 3), 128, np.uint8))
    for flag, expected in (("--spin", "1"), ("--no-spin", "0")):
        result = CliRunner().invoke(main, [str(tmp_path / "a.png"), "--model", str(tiny_onnx), flag, "--json"])
        assert result.exit_code == 0, result.output
        assert seen[-1] == expected


def _run(*args: str) -> click.testing.Result:
    return CliRunner().invoke(main, [*args])


def test_json_out_never_replaces_an_input_an_output_a_link_or_a_device(tiny_onnx: Path, tmp_path: Path) -> None:
    """Items 7-9, one rule for every output: never an input of the run (even with --force), never another
    output of the run, never a symlink or a non-regular file; each is one error line, exit 2, nothing written."""
    import os

    photo = _photo(tmp_path / "a.png")
    before = photo.read_bytes()
    model = ["--model", str(tiny_onnx), "--provider", "cpu"]
    result = _run(str(photo), "--json-out", str(photo), "--force", *model)  # item 7
    assert result.exit_code == 2 and f"error: {photo}: is an input of this run; not written" in result.stderr
    assert photo.read_bytes() == before
    out = tmp_path / "out"
    result = _run(str(photo), "--output", str(out), "--json-out", str(out / "a.png"), *model)  # item 8
    assert result.exit_code == 2, result.output
    assert f"error: {out / 'a.png'}: is also another output of this run; not written" in result.stderr
    assert not (out / "a.png").exists()
    link = tmp_path / "link.jsonl"
    target = tmp_path / "target.txt"
    target.write_text("keep")
    link.symlink_to(target)
    fifo = tmp_path / "fifo.jsonl"
    os.mkfifo(fifo)
    for path, kind in ((link, "a symbolic link"), (fifo, "a FIFO"), (Path("/dev/null"), "a character device")):
        result = _run(str(photo), "--json-out", str(path), "--force", *model)  # item 9
        assert result.exit_code == 2 and f"error: {path}: is {kind}, not a regular file; not written" in result.stderr
    assert link.is_symlink() and target.read_text() == "keep" and fifo.is_fifo()
    result = _run(str(photo), "--json-out", str(tiny_onnx), "--force", *model)  # the model being read
    assert result.exit_code == 2 and f"error: {tiny_onnx}: is the model this run reads; not written" in result.stderr


def _avi(path: Path, frames: int, size: tuple[int, int] = (64, 48)) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, size)
    for i in range(frames):
        writer.write(np.random.default_rng(i).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))
    writer.release()
    return path


def test_a_frame_too_large_is_one_line_and_the_rest_is_kept(tiny_onnx: Path, tmp_path: Path) -> None:
    """Item 10: a video whose frames pass --max-pixels is one error line; the photo before it is predicted
    and its JSON line written; exit 1. A model that fails at its first prediction is one line, exit 2."""
    photo = _photo(tmp_path / "a.png", (40, 60))
    video = _video(tmp_path / "big.mp4", frames=3, size=(128, 96))
    jsonl = tmp_path / "p.jsonl"
    result = _run(str(photo), str(video), "--model", str(tiny_onnx), "--max-pixels", "5000", "--json-out", str(jsonl))
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert f"error: {video} frame 0: 128x96 image exceeds the 5,000-pixel limit" in result.stderr
    assert [json.loads(line)["source"] for line in jsonl.read_text().splitlines()] == [str(photo)]
    from test_serve import _resized_metadata

    bad = _resized_metadata(tiny_onnx, tmp_path / "bad.onnx")
    result = _run(str(photo), "--model", str(bad), "--json-out", str(tmp_path / "q.jsonl"))
    assert result.exit_code == 2 and result.exception is None or isinstance(result.exception, SystemExit)
    assert result.stderr.strip() == (f"error: {bad}: the graph's input is 32x32 but the metadata says 128x64 "
                                     "(digitloc.input_size)"), result.stderr


def _sideways_jpeg(path: Path) -> Path:
    """A JPEG stored turned a quarter (the digit's bar upright in the stored pixels, wide when shown)
    with EXIF orientation 6, as a phone writes it."""
    import struct

    img = np.full((90, 60, 3), 30, np.uint8)
    cv2.rectangle(img, (10, 40), (50, 48), (240, 240, 240), -1)
    jpg = cv2.imencode(".jpg", img)[1].tobytes()
    tiff = b"MM\0*" + struct.pack(">IHHHIHHI", 8, 1, 0x0112, 3, 1, 6, 0, 0)
    app1 = b"Exif\0\0" + tiff
    path.write_bytes(jpg[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + jpg[2:])
    return path


def test_exif_orientation_one_decoder_one_answer(tiny_onnx: Path, tmp_path: Path) -> None:
    """Item 11: a sideways phone JPEG (orientation 6) reads the same through Detector.predict, digitloc-run
    and the server, in the upright frame (90 wide, 60 high)."""
    from starlette.testclient import TestClient

    from digitloc.runtime.imageio import read_image_file
    from digitloc.serve.app import create_app

    photo = _sideways_jpeg(tmp_path / "phone.jpg")
    assert read_image_file(photo).shape[:2] == (60, 90)
    detector = Detector(tiny_onnx, provider="cpu")
    api = detector.predict(photo)
    assert api.bbox[2] <= 90 and api.bbox[3] <= 60
    run = _run(str(photo), "--model", str(tiny_onnx), "--provider", "cpu", "--json")
    record = json.loads(run.stdout.splitlines()[0])
    with TestClient(create_app(detector)) as client:
        served = client.post("/predict", content=photo.read_bytes(), headers={"content-type": "image/jpeg"}).json()
    assert (served["width"], served["height"]) == (90, 60)
    assert record["digit"] == served["digit"] == api.digit
    np.testing.assert_allclose(record["bbox"], served["bbox"], atol=0.05)
    np.testing.assert_allclose(api.bbox, served["bbox"], atol=0.05)


def test_rough_edges_are_each_one_line(tiny_onnx: Path, tmp_path: Path) -> None:
    """Item 12: a truncated AVI is reported (frames read of those declared, exit 1); no FFmpeg or OpenCV
    noise on stderr; a FIFO named .png and a symlink loop are named as such; --threads out of range and
    --output equal to the input folder are refused; a newline in a file name stays in its summary row."""
    import os

    model = ["--model", str(tiny_onnx), "--provider", "cpu"]
    full = _avi(tmp_path / "full.avi", 40)
    trunc = tmp_path / "trunc.avi"
    trunc.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    proc = subprocess.run([sys.executable, "-m", "digitloc.runtime.cli", str(trunc), *model, "--json"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    read = len(proc.stdout.splitlines())
    assert 0 < read < 40
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert f"error: {trunc}: video ends after {read} of 40 frames (truncated or corrupt)" in lines
    assert all(line.startswith(("error: ", "model ", f"{read} frames predicted")) for line in lines), lines
    os.mkfifo(tmp_path / "pipe.png")
    (tmp_path / "loop.png").symlink_to(tmp_path / "loop.png")
    result = _run(str(tmp_path / "pipe.png"), str(tmp_path / "loop.png"), *model)
    assert result.exit_code == 1
    assert f"error: {tmp_path / 'pipe.png'}: is a FIFO, not a regular file" in result.stderr
    assert f"error: {tmp_path / 'loop.png'}: symbolic link loop" in result.stderr
    folder = tmp_path / "photos"
    folder.mkdir()
    _photo(folder / "a.png")
    (folder / "loop.png").symlink_to(folder / "loop.png")
    result = _run(str(folder), *model)
    assert result.exit_code == 1 and f"error: {folder / 'loop.png'}: symbolic link loop" in result.stderr
    for threads in ("0", "-1", "1000"):
        result = _run(str(folder / "a.png"), "--threads", threads, *model)
        assert result.exit_code == 2 and "--threads" in result.output and "1<=x<=256" in result.output, threads
    result = _run(str(folder), "--output", str(folder), *model)
    assert result.exit_code == 2
    assert f"error: {folder}: --output is an input folder; give another folder" in result.stderr
    odd = _photo(tmp_path / "two\nlines.png")
    result = _run(str(odd), *model, "--summary")
    assert result.exit_code == 0, result.output
    header, row = result.stdout.splitlines()
    assert row.startswith("two\\nlines.png ")


def test_a_prediction_that_fails_is_one_line_and_the_batch_goes_on(tiny_onnx: Path, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Item 10: the model fails on one photo of a batch (onnxruntime's own exception type): that photo is one
    error line, the batch is retried photo by photo, the others are predicted and their JSON is written."""
    real = Detector.run

    def run(self: Detector, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if any((im == 77).all() for im in batch):
            raise RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : boom\nsecond line")
        return real(self, batch)

    monkeypatch.setattr(Detector, "run", run)
    photos = [_photo(tmp_path / f"{k}.png") for k in ("a", "b")]
    cv2.imwrite(str(tmp_path / "poison.png"), np.full((60, 90, 3), 77, np.uint8))
    jsonl = tmp_path / "p.jsonl"
    result = _run(str(tmp_path), "--model", str(tiny_onnx), "--provider", "cpu", "--no-refine", "--json-out", str(jsonl))
    assert result.exit_code == 1 and (result.exception is None or isinstance(result.exception, SystemExit))
    assert (f"error: {tmp_path / 'poison.png'}: prediction failed (RuntimeError: [ONNXRuntimeError] : 6 : "
            "RUNTIME_EXCEPTION : boom)") in result.stderr
    assert sorted(json.loads(line)["source"] for line in jsonl.read_text().splitlines()) == [str(p) for p in photos]


def test_a_sigterm_while_atomic_path_makes_its_file_leaves_none_behind(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A SIGTERM that a raising handler turns into an exception just after mkstemp made the temporary file
    (before atomic_path knows its name) still comes out of atomic_path, and the file is removed."""
    import os
    import signal
    import tempfile

    from digitloc.runtime import fileio

    real = tempfile.mkstemp

    def stopped_after_mkstemp(*args: object, **kwargs: object) -> tuple[int, str]:
        made = real(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGTERM)
        return made

    class Stopped(Exception):
        pass

    def stop(signum: int, frame: object) -> None:
        raise Stopped

    monkeypatch.setattr(fileio.tempfile, "mkstemp", stopped_after_mkstemp)
    previous = signal.signal(signal.SIGTERM, stop)
    try:
        with pytest.raises(Stopped), fileio.atomic_path(tmp_path / "out.json") as tmp:
            tmp.write_text("{}")
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert list(tmp_path.iterdir()) == []
    assert signal.getsignal(signal.SIGTERM) is previous
