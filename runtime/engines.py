"""``provider="auto"`` on a CPU with OpenVINO installed: the faster of onnxruntime and OpenVINO for this model on this CPU.

Which engine reads a given int8 model faster depends on the CPU (VNNI or not, cores, cache) and
on the batch size (the model card's section "The fastest engine on the user's CPU"). So the
runtime does not guess. The first batch of each size class (one photo, or several) times every
engine that is installed on a probe batch, interleaved, and keeps the fastest whose outputs agree
with onnxruntime's there (another engine only when it is at least ``MARGIN`` faster: onnxruntime
is the reference). The choice is cached per model file, CPU, engine versions, threads and size
class (``engines.json`` in the user's cache folder), so the probe runs once.
:class:`AutoSession` looks like an onnxruntime session to the Detector.

The probe batch is drawn digits on plain backgrounds (nothing to read from disk); its agreement
check only refuses an engine that is plainly broken here. Agreement on real photos is measured by
``digitloc-bench drift`` and ``digitloc-bench compare``.
"""

from __future__ import annotations

import hashlib
import json
import os
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from digitloc.runtime.contract import BBOX_OUTPUT, DIGIT_OUTPUT, INPUT_NAME, box_iou, order_box
from digitloc.runtime.fileio import atomic_write_text

ONNXRUNTIME = "onnxruntime"
PROBE_BATCH = {"one": 1, "many": 32}  # the size classes, and the batch each is probed at
# Each engine runs PROBE_ROUNDS rounds of at least PROBE_IMAGES images, after PROBE_WARMUP calls, the order
# reversed every other round. With 3 rounds of one call at batch 32 (session 9), a busy shared host once
# made the probe keep onnxruntime (460 against 430 images/s) where OpenVINO was 1.30x faster in the same run.
PROBE_ROUNDS = 5
PROBE_IMAGES = 64
PROBE_WARMUP = 2
# On the probe batch (drawn digits, not photos: int8 and fp32 of one model differ there by up to 0.12 box
# IoU), an engine must read the same digit with a box of IoU >= BOX_IOU on MIN_AGREEMENT of the images:
# a guard against an engine that is plainly wrong here, not the agreement measured on real photos.
MIN_AGREEMENT = 0.9
BOX_IOU = 0.8
# Another engine must beat onnxruntime (the reference the models are exported and checked on) by this
# factor to be chosen: within the probe's noise, onnxruntime stays.
MARGIN = 1.03
CACHE_ENV = "DIGITLOC_CACHE_DIR"


def size_class(batch: int) -> str:
    """The size class a batch belongs to: ``one`` photo or ``many``."""
    return "one" if batch <= 1 else "many"


def cache_path() -> Path:
    """``$DIGITLOC_CACHE_DIR/engines.json``, else ``$XDG_CACHE_HOME/digitloc/``, else ``~/.cache/digitloc/``."""
    root = os.environ.get(CACHE_ENV)
    if root:
        return Path(root) / "engines.json"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "digitloc" / "engines.json"


def model_digest(path: str | os.PathLike[str]) -> str:
    """sha256 of the model file (the first 16 hex digits): a re-exported model is probed again."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:16]


def probe_images(size: tuple[int, int], batch: int, seed: int = 0) -> np.ndarray:
    """``batch`` uint8 RGB images of ``size`` (H, W): one to three drawn digits on a plain
    background, so that the model's outputs are confident enough to compare engines on."""
    import cv2

    rng = np.random.default_rng(seed)
    h, w = size
    out = np.empty((batch, h, w, 3), np.uint8)
    for i in range(batch):
        bg = rng.integers(0, 256, 3)
        image = np.empty((h, w, 3), np.uint8)
        image[:] = bg
        text = "".join(str(d) for d in rng.integers(0, 10, int(rng.integers(1, 4))))
        scale = h / 40 * rng.uniform(0.6, 1.2)
        (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, max(1, int(scale * 2)))
        x = int(rng.integers(0, max(1, w - tw)))
        y = int(rng.integers(th, max(th + 1, h)))
        ink = tuple(int(255 - c) for c in bg)
        cv2.putText(image, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, ink, max(1, int(scale * 2)), cv2.LINE_AA)
        out[i] = image
    return out


def agreement(reference: list[np.ndarray], other: list[np.ndarray]) -> float:
    """Share of images where ``other``'s most confident digit is ``reference``'s, box IoU >= BOX_IOU."""
    (ref_box, ref_digit), (box, digit) = reference, other
    close = np.all(np.abs(np.asarray(ref_box) - np.asarray(box)) <= 1e-6, axis=1)  # also boxes of no area
    iou = box_iou(order_box(ref_box), order_box(box))  # corners as the Detector orders them
    same = (np.argmax(ref_digit, 1) == np.argmax(digit, 1)) & (close | (iou >= BOX_IOU))
    return float(np.mean(same))


@dataclass
class EngineChoice:
    """What the probe found for one size class: the engine used and why."""

    engine: str
    size_class: str
    batch: int
    images_per_s: dict[str, float]
    agreement: dict[str, float]
    measured: str
    cached: bool = False

    def describe(self) -> str:
        rates = ", ".join(f"{name} {rate:.0f}/s" for name, rate in self.images_per_s.items())
        how = "cached probe" if self.cached else "probe"
        return f"{self.engine} for {self.size_class} ({how} at batch {self.batch}: {rates})"


def time_engines(runners: dict[str, Callable[[np.ndarray], Any]], images: np.ndarray,
                 rounds: int = PROBE_ROUNDS) -> dict[str, float]:
    """Images per second of each runner on ``images`` (median of ``rounds``), after ``PROBE_WARMUP`` calls
    each: interleaved round-robin, so that other work on the CPU slows every engine alike, in reversed
    order every other round, so that a load that rises or falls through the probe favours none."""
    for run in runners.values():
        for _ in range(PROBE_WARMUP):
            run(images)
    calls = max(2, -(-PROBE_IMAGES // len(images)))
    seen: dict[str, list[float]] = {name: [] for name in runners}
    names = list(runners)
    for r in range(rounds):
        for name in (names if r % 2 == 0 else names[::-1]):
            run = runners[name]
            start = time.perf_counter()
            for _ in range(calls):
                run(images)
            seen[name].append(calls * len(images) / max(time.perf_counter() - start, 1e-9))
    return {name: statistics.median(rates) for name, rates in seen.items()}


def pick_engine(rates: dict[str, float]) -> str:
    """The fastest engine, where any other than onnxruntime must be ``MARGIN`` faster to count."""
    return max(rates, key=lambda name: rates[name] / (1.0 if name == ONNXRUNTIME else MARGIN))


class EngineCache:
    """The probe results on disk: one JSON object, written atomically; an unreadable file is ignored.
    Without a path, ``cache_path()`` as it is at each read and write (the environment may change)."""

    def __init__(self, path: Path | None = None) -> None:
        self._path = path

    @property
    def path(self) -> Path:
        return self._path or cache_path()

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def get(self, key: str) -> EngineChoice | None:
        entry = self._read().get(key)
        try:
            return EngineChoice(**{**entry, "cached": True}) if isinstance(entry, dict) else None
        except TypeError:
            return None

    def put(self, key: str, choice: EngineChoice) -> None:
        data = self._read()
        data[key] = {k: v for k, v in asdict(choice).items() if k != "cached"}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.path, json.dumps(data, indent=1, sort_keys=True))
        except OSError:
            pass  # a read-only home: the probe is simply run again next time


def engine_versions() -> str:
    import onnxruntime as ort

    versions = [f"onnxruntime {ort.__version__}"]
    try:
        import openvino

        versions.append(f"openvino {openvino.__version__}")
    except Exception:  # not installed, or a broken install: OpenVINO is then simply not a candidate
        pass
    return ", ".join(versions)


class AutoSession:
    """An onnxruntime-like session that runs each batch on the engine its size class was probed
    to be fastest on. ``engines`` maps a name to a factory of a session (onnxruntime's first: it is
    the reference the others must agree with); a factory that fails drops that engine."""

    def __init__(self, model_path: Path, input_size: tuple[int, int], engines: dict[str, Callable[[], Any]],
                 threads: int | None = None, cache: EngineCache | None = None) -> None:
        from digitloc.runtime.cpuinfo import cpu_features

        self.model_path = model_path
        self.input_size = input_size
        self._factories = dict(engines)
        self._sessions: dict[str, Any] = {ONNXRUNTIME: self._factories.pop(ONNXRUNTIME)()}
        self._choices: dict[str, EngineChoice] = {}
        self._lock = threading.Lock()
        self.cache = cache or EngineCache()
        cpu = cpu_features()
        self._key = (f"{model_digest(model_path)}|{cpu['cpu']}|{cpu['cores']}|{' '.join(cpu['isa'])}|"
                     f"{engine_versions()}|threads {threads or 'all'}")

    @property
    def reference(self) -> Any:
        return self._sessions[ONNXRUNTIME]

    def get_inputs(self) -> list[Any]:
        return self.reference.get_inputs()

    def get_outputs(self) -> list[Any]:
        return self.reference.get_outputs()

    def get_modelmeta(self) -> Any:
        return self.reference.get_modelmeta()

    def get_providers(self) -> list[str]:
        return [self.describe()]

    @property
    def choices(self) -> dict[str, EngineChoice]:
        return dict(self._choices)

    def describe(self) -> str:
        """``auto``, and what each size class probed so far runs on."""
        if not self._choices:
            return f"auto ({', '.join([ONNXRUNTIME, *self._factories])}: probed on the first batch)"
        return "auto: " + "; ".join(c.describe() for c in self._choices.values())

    def _session(self, name: str) -> Any | None:
        if name not in self._sessions:
            try:
                self._sessions[name] = self._factories[name]()
            except Exception:  # an engine that cannot load this model here is simply not a candidate
                self._sessions[name] = None
        return self._sessions[name]

    def choose(self, batch: int) -> EngineChoice:
        """The engine for batches of this size: from the cache, else probed now (and cached)."""
        cls = size_class(batch)
        with self._lock:
            if cls in self._choices:
                return self._choices[cls]
            key = f"{self._key}|{cls}"
            choice = self.cache.get(key)
            if choice is None or (choice.engine != ONNXRUNTIME and self._session(choice.engine) is None):
                choice = self._probe(cls)
                self.cache.put(key, choice)
            self._choices[cls] = choice
            return choice

    def _probe(self, cls: str) -> EngineChoice:
        images = probe_images(self.input_size, PROBE_BATCH[cls])
        names = [BBOX_OUTPUT, DIGIT_OUTPUT]
        reference = self.reference.run(names, {INPUT_NAME: images})
        runners, agree = {}, {}
        for name in [ONNXRUNTIME, *self._factories]:
            session = self._session(name)
            if session is None:
                continue
            agree[name] = 1.0 if name == ONNXRUNTIME else agreement(reference, session.run(names, {INPUT_NAME: images}))
            if agree[name] >= MIN_AGREEMENT:
                runners[name] = lambda x, s=session: s.run(names, {INPUT_NAME: x})
        rates = time_engines(runners, images)
        best = pick_engine(rates)
        return EngineChoice(best, cls, len(images), {k: round(v, 1) for k, v in rates.items()},
                            {k: round(v, 4) for k, v in agree.items()},
                            datetime.now(UTC).isoformat(timespec="seconds"))

    def run(self, names: list[str], feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        engine = self.choose(len(feed[INPUT_NAME])).engine
        return self._sessions[engine].run(names, feed)
