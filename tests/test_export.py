"""digitloc-export: every precision, parity at explicit tolerances, metadata, Triton, bad inputs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner

from digitloc.annotations.dataset.data import DataSet
from digitloc.annotations.metrics import agreement
from digitloc.export.api import RANDOM_WARNING, ExportConfig, export_model
from digitloc.export.cli import main
from digitloc.export.errors import ExportError
from digitloc.export.parity import onnx_predict
from digitloc.export.quantize import Fp16Config, Fp32Config, Int8DynamicConfig, Int8StaticConfig
from digitloc.export.triton import write_repository
from digitloc.runtime import contract
from digitloc.train.model import keras_predict, load_model

# (precision, config factory, max abs diff, least class agreement, least mean IoU between the two
# models' boxes) on the toy validation images. The toy boxes are thin bars (3 of 32 px wide), so a
# fraction of a pixel of int8 error costs much IoU.
CASES = [
    ("fp32", lambda cal: Fp32Config(), 1e-4, 1.0, 0.999),
    ("fp16", lambda cal: Fp16Config(), 5e-3, 0.98, 0.95),
    ("int8-dynamic", lambda cal: Int8DynamicConfig(), 0.1, 0.95, 0.5),
    ("int8-static", lambda cal: Int8StaticConfig(calibration=cal), 0.1, 0.95, 0.5),
]


@pytest.fixture(scope="module")
def val_images(tiny_run: Path) -> np.ndarray:
    data = json.loads((tiny_run / "config.json").read_text())["data"]
    return DataSet.load(Path(data) / "val.npz").images


@pytest.mark.parametrize(("precision", "make", "max_diff", "min_agree", "min_iou"), CASES)
def test_every_precision_holds_parity(tiny_run: Path, tmp_path: Path, val_images: np.ndarray, precision: str,
                                      make, max_diff: float, min_agree: float, min_iou: float) -> None:
    train = DataSet.load(Path(json.loads((tiny_run / "config.json").read_text())["data"]) / "train.npz")
    out = tmp_path / f"m-{precision}.onnx"
    report = export_model(tiny_run / "model.keras", ExportConfig(output=out, quant=make(train.images[:128]),
                                                                 parity_images=val_images, min_agreement=min_agree,
                                                                 min_box_iou=min_iou))
    # The gate's figures are in the report written beside the model, and they meet this case's limits.
    assert json.loads(out.with_suffix(".parity.json").read_text()) == report
    assert report["class_agreement"] >= min_agree and report["box_iou_mean"] >= min_iou
    assert report["parity_inputs"] == "real images" and report["samples"] == len(val_images)
    assert report["gate"]["min_box_iou"] == min_iou and report["cpu"]["isa"] is not None
    onnx.checker.check_model(str(out))
    # Independent re-check of what was written, at this precision's tolerance.
    ours = agreement(keras_predict(load_model(tiny_run / "model.keras"), val_images), onnx_predict(out, val_images))
    assert ours["max_abs_diff"] <= max_diff
    assert ours["class_agreement"] >= min_agree
    assert ours["box_iou_mean"] >= min_iou
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (inp,) = session.get_inputs()
    assert inp.name == contract.INPUT_NAME and inp.type == "tensor(uint8)" and inp.shape == ["batch", 32, 32, 3]
    assert {o.name: o.type for o in session.get_outputs()} == {"bbox": "tensor(float)", "digit": "tensor(float)"}
    info = contract.parse_metadata(session.get_modelmeta().custom_metadata_map, str(out))
    assert info.precision == precision and info.input_size == (32, 32)
    assert json.loads((tmp_path / f"m-{precision}.parity.json").read_text())["precision"] == precision
    if precision == "int8-static":
        excluded = json.loads(info.metadata[contract.META_EXCLUDED_NODES])
        assert any("bbox" in n for n in excluded) and any("digit" in n for n in excluded)
        assert out.stat().st_size < 0.5 * report["fp32_size_bytes"]


def test_metadata_round_trips(tiny_onnx: Path) -> None:
    meta = ort.InferenceSession(str(tiny_onnx), providers=["CPUExecutionProvider"]).get_modelmeta().custom_metadata_map
    info = contract.parse_metadata(meta, "tiny")
    assert info.class_names == tuple("0123456789")
    assert meta[contract.META_RESIZE_MODE] == "stretch" and meta[contract.META_BOX_FORMAT] == "xyxy-relative"
    backbone = json.loads(meta[contract.META_BACKBONE])
    assert backbone["name"] == "vgg19" and backbone["width"] == 0.125 and backbone["batchnorm"] is True
    assert json.loads(meta[contract.META_TRAINING])["box_loss"] == "mse+giou"
    assert re.match(r"\d{4}-\d\d-\d\dT", meta[contract.META_EXPORTED_AT])
    assert contract.parse_metadata(contract.contract_metadata((48, 64), "fp32"), "x").input_size == (48, 64)


def _parse_pbtxt(text: str) -> dict:
    tensors = re.findall(r'name: "(\w+)"\s+data_type: (\w+)\s+dims: \[ ([^\]]*) \]', text)
    return {name: (dtype, [int(d) for d in dims.split(",")]) for name, dtype, dims in tensors}


def test_triton_config_matches_the_graph(tiny_onnx: Path, tmp_path: Path) -> None:
    folder = write_repository(tiny_onnx, tmp_path / "repo", "digitloc")
    text = (folder / "config.pbtxt").read_text()
    assert (folder / "1" / "model.onnx").read_bytes() == tiny_onnx.read_bytes()
    assert 'backend: "onnxruntime"' in text and "max_batch_size: 64" in text and "dynamic_batching" in text
    tensors = _parse_pbtxt(text)
    graph = onnx.load(str(tiny_onnx)).graph
    types = {1: "TYPE_FP32", 2: "TYPE_UINT8"}
    for value in list(graph.input) + list(graph.output):
        dims = [d.dim_value for d in value.type.tensor_type.shape.dim][1:]
        assert tensors[value.name] == (types[value.type.tensor_type.elem_type], dims)
    assert set(tensors) == {"image", "bbox", "digit"}
    with pytest.raises(FileExistsError):
        write_repository(tiny_onnx, tmp_path / "repo", "digitloc")


def test_cli_exports_with_triton_repo_and_refuses_overwrite(tiny_run: Path, tmp_path: Path) -> None:
    data = json.loads((tiny_run / "config.json").read_text())["data"]
    out = tmp_path / "m.onnx"
    args = [str(tiny_run / "model.keras"), "-o", str(out), "--precision", "int8-static", "--calib", data,
            "--calib-size", "64", "--min-agreement", "0.9", "--min-box-iou", "0.5",
            "--triton-repo", str(tmp_path / "triton")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "class agreement" in result.output and (tmp_path / "triton" / "m" / "config.pbtxt").is_file()
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 1 and "already exists" in again.output


def test_failed_gate_leaves_nothing(tiny_run: Path, tmp_path: Path, val_images: np.ndarray) -> None:
    out = tmp_path / "m.onnx"
    with pytest.raises(ExportError, match="parity gate failed"):
        export_model(tiny_run / "model.keras", ExportConfig(output=out, quant=Fp16Config(), parity_images=val_images,
                                                            min_agreement=1.01))
    assert list(tmp_path.iterdir()) == []


def _damage_box_head(path: Path, scale: float = 0.3) -> None:
    """Scale the weights of the box head's last layer: the boxes move, the digits do not."""
    proto = onnx.load(str(path))
    inits = {t.name: t for t in proto.graph.initializer}
    (node,) = [n for n in proto.graph.node if n.op_type == "MatMul" and "bbox" in n.name]
    weights = inits[node.input[1]]
    weights.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(weights) * scale, weights.name))
    onnx.save(proto, str(path))


def test_gate_fails_an_export_with_a_damaged_box_head(tiny_run: Path, tmp_path: Path, val_images: np.ndarray,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import digitloc.export.quantize as quantize_module

    real_quantize = quantize_module.quantize

    def damaging(fp32: Path, out: Path, config: object) -> dict:
        extra = real_quantize(fp32, out, config)
        _damage_box_head(out)
        return extra

    monkeypatch.setattr(quantize_module, "quantize", damaging)
    out = tmp_path / "m.onnx"
    # Only the box check can catch it: the digits are untouched and the fp32 difference check is relaxed.
    with pytest.raises(ExportError, match="mean box IoU with Keras") as info:
        export_model(tiny_run / "model.keras", ExportConfig(output=out, quant=Fp32Config(), parity_images=val_images,
                                                            max_abs_diff=10.0, min_box_iou=0.9))
    assert "class agreement" not in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_gate_reasons_per_check() -> None:
    from digitloc.export.parity import Gate, gate

    good = {"max_abs_diff": 0.01, "class_agreement": 0.995, "box_iou_mean": 0.98, "accuracy": 0.80,
            "keras_accuracy": 0.802}
    assert gate(good, "int8-static", Gate()) is None
    assert "box IoU" in gate({**good, "box_iou_mean": 0.9}, "int8-static", Gate())
    assert "class agreement" in gate({**good, "class_agreement": 0.95}, "int8-static", Gate())
    assert "pt below Keras" in gate({**good, "accuracy": 0.79}, "int8-static", Gate())
    assert "max abs diff" in gate(good, "fp32", Gate())
    assert gate({**good, "accuracy": None}, "int8-static", Gate(max_accuracy_drop=0.0)) is None


def test_parity_uses_the_runs_real_photos_and_random_noise_only_when_asked(tiny_run: Path, tmp_path: Path) -> None:
    report = export_model(tiny_run / "model.keras", ExportConfig(output=tmp_path / "a.onnx", quant=Fp32Config()))
    assert report["parity_inputs"].startswith("real images") and report["keras_accuracy"] is not None
    assert "warning" not in report
    lone = tmp_path / "lone"
    lone.mkdir()
    (lone / "model.keras").write_bytes((tiny_run / "model.keras").read_bytes())  # no run folder beside it
    with pytest.raises(ExportError, match="no real photos for the parity gate"):
        export_model(lone / "model.keras", ExportConfig(output=tmp_path / "b.onnx", quant=Fp32Config()))
    result = CliRunner().invoke(main, [str(lone / "model.keras"), "-o", str(tmp_path / "c.onnx"), "--parity-random"])
    assert result.exit_code == 0, result.output
    assert result.output.count(RANDOM_WARNING) == 1  # said once, after what was written
    written = json.loads((tmp_path / "c.parity.json").read_text())
    assert written["parity_inputs"].startswith("RANDOM NOISE") and "RANDOM NOISE" in written["warning"]


def test_bad_inputs_fail_clearly(tiny_run: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    model = str(tiny_run / "model.keras")
    cases = [
        ([str(tmp_path / "missing.keras"), "-o", str(tmp_path / "a.onnx")], "no such file"),
        ([str(tiny_run / "config.json"), "-o", str(tmp_path / "a.onnx")], "expected a Keras .keras file"),
        ([model, "-o", str(tmp_path / "a.onnx"), "--precision", "int8-static"], "needs --calib"),
        ([model, "-o", str(tmp_path / "a.onnx"), "--precision", "int8-static", "--calib", str(tmp_path / "nope")],
         "neither a dataset folder"),
    ]
    for args, message in cases:
        result = runner.invoke(main, args)
        assert result.exit_code == 1 and message in result.output, (args, result.output)
    broken = tmp_path / "broken.keras"
    broken.write_bytes(b"not a zip")
    result = runner.invoke(main, [str(broken), "-o", str(tmp_path / "a.onnx")])
    assert result.exit_code == 1 and "not a Keras model" in result.output
    empty_images = tmp_path / "imgs"
    empty_images.mkdir()
    (empty_images / "x.png").write_bytes(b"garbage")
    result = runner.invoke(main, [model, "-o", str(tmp_path / "a.onnx"), "--precision", "int8-static", "--calib",
                                  str(empty_images)])
    assert result.exit_code == 1 and "no readable real images" in result.output
    assert not (tmp_path / "a.onnx").exists()


def test_a_keras_model_of_another_shape_is_refused(tmp_path: Path) -> None:
    import keras

    inp = keras.Input((32, 32, 3), dtype="uint8", name="image")
    x = keras.layers.Flatten()(keras.layers.Rescaling(1 / 255)(inp))
    other = keras.Model(inp, keras.layers.Dense(10, activation="softmax")(x))
    path = tmp_path / "other.keras"
    other.save(path)
    result = CliRunner().invoke(main, [str(path), "-o", str(tmp_path / "o.onnx")])
    assert result.exit_code == 1 and "not a digitloc model" in result.output


def test_a_non_square_model_exports_and_serves(tmp_path: Path) -> None:
    # A 64x32 (width x height) model: the ONNX input, the metadata and the runtime's resize all
    # follow (height, width), and the exported file matches Keras.
    import keras

    from digitloc.runtime import Detector
    from digitloc.train.model import ModelConfig, build_model

    keras.utils.set_random_seed(2)  # untrained weights: a fixed draw, so the fp32 gate's box IoU is the same each run
    model = build_model(ModelConfig(input_size=(32, 64), width=0.125, batchnorm=True, box_units=(16,),
                                    class_units=(16,)))
    path = tmp_path / "wide.keras"
    model.save(path)
    images = np.random.default_rng(0).integers(0, 255, (16, 32, 64, 3)).astype(np.uint8)
    out = tmp_path / "wide.onnx"
    export_model(path, ExportConfig(output=out, quant=Fp32Config(), parity_images=images))
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape[1:] == [32, 64, 3]
    detector = Detector(out, provider="cpu", refine=False)  # one pass: compared with Keras
    assert detector.input_size == (32, 64)
    photo = np.random.default_rng(1).integers(0, 255, (90, 200, 3)).astype(np.uint8)  # BGR, any size
    found = detector.predict(photo)
    keras_boxes, keras_probs = keras_predict(load_model(path), contract_input(photo, (32, 64)))
    assert found.digit == int(keras_probs[0].argmax())
    # The Detector orders the corners (an untrained head may put y1 below y2); compare it with the ordered box.
    np.testing.assert_allclose(np.array(found.bbox) / [200, 90, 200, 90], contract.order_box(keras_boxes)[0], atol=1e-4)


def contract_input(photo_bgr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    from digitloc.runtime.preprocess import preprocess

    return preprocess(photo_bgr, size)[None]


def test_unwritable_output_is_refused(tiny_run: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a folder would have to be")
    result = CliRunner().invoke(main, [str(tiny_run / "model.keras"), "-o", str(blocker / "m.onnx")])
    assert result.exit_code == 1 and result.output == f"error: {blocker}: not a folder (a file is in the way)\n"
    assert blocker.read_text().startswith("a file")


@pytest.mark.parametrize(("activations", "dtype"), [("uint8", onnx.TensorProto.UINT8), ("int8", onnx.TensorProto.INT8)])
def test_int8_static_activation_type(tiny_run: Path, tmp_path: Path, val_images: np.ndarray, activations: str,
                                     dtype: int) -> None:
    train = DataSet.load(Path(json.loads((tiny_run / "config.json").read_text())["data"]) / "train.npz")
    out = tmp_path / f"m-{activations}.onnx"
    report = export_model(tiny_run / "model.keras", ExportConfig(
        output=out, quant=Int8StaticConfig(calibration=train.images[:128], activations=activations),
        parity_images=val_images, min_agreement=0.95, min_box_iou=0.5))
    assert report["activations"] == activations and out.with_suffix(".parity.json").is_file()
    proto = onnx.load(str(out))
    inits = {t.name: t for t in proto.graph.initializer}
    zero_points = [inits[n.input[2]] for n in proto.graph.node if n.op_type == "QuantizeLinear" and len(n.input) > 2]
    assert zero_points and all(z.data_type == dtype for z in zero_points)


def test_int8_static_refuses_an_unknown_activation_type(tiny_run: Path, tmp_path: Path) -> None:
    from digitloc.export.errors import ExportError
    from digitloc.export.quantize import quantize

    with pytest.raises(ExportError, match="unknown activation type 'int4'"):
        quantize(tmp_path / "x.onnx", tmp_path / "y.onnx",
                 Int8StaticConfig(calibration=np.zeros((2, 32, 32, 3), np.uint8), activations="int4"))


def test_foreign_keras_files_and_an_existing_triton_entry_fail_before_writing(tiny_run: Path, tmp_path: Path) -> None:
    import zipfile

    runner = CliRunner()
    text = tmp_path / "text.keras"
    text.write_text("just some text")
    foreign = tmp_path / "foreign.keras"
    with zipfile.ZipFile(foreign, "w") as archive:
        archive.writestr("readme.txt", "a zip, not a model")
    for path, reason in ((text, "a .keras file is a zip archive; this one is not"),
                         (foreign, "a zip archive without config.json")):
        result = runner.invoke(main, [str(path), "-o", str(tmp_path / "a.onnx")])
        assert result.exit_code == 1 and result.output.strip() == f"error: {path}: not a Keras model ({reason})"
        assert "File not found" not in result.output
    (tmp_path / "triton" / "m").mkdir(parents=True)
    out = tmp_path / "m.onnx"
    result = runner.invoke(main, [str(tiny_run / "model.keras"), "-o", str(out), "--triton-repo",
                                  str(tmp_path / "triton")])
    assert result.exit_code == 1 and f"{tmp_path / 'triton' / 'm'}: already exists" in result.output
    assert not out.exists() and not out.with_suffix(".parity.json").exists()  # nothing half done


def test_the_cli_loads_the_keras_model_once(tiny_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import digitloc.export.api as api

    calls = []
    real = api.load_keras
    monkeypatch.setattr(api, "load_keras", lambda path: calls.append(path) or real(path))
    out = tmp_path / "once.onnx"
    result = CliRunner().invoke(main, [str(tiny_run / "model.keras"), "-o", str(out), "--parity-random"])
    assert result.exit_code == 0, result.output
    assert out.is_file() and len(calls) == 1
