"""``--ocr``: read the pixels with Tesseract and report burned-in text without showing it.

Why: the header checks can only say that an image *might* carry burned-in text (the flag, the
kind of image). OCR looks at the pixels. It is a review aid, not proof: Tesseract misses small,
stylised or low-contrast text and misreads characters (the synthetic 5x7 dot-matrix font comes
back with one digit in nine wrong), so a clean OCR result does not clear an image.

Per image instance (anything with Pixel Data pydicom can decode, natively or through the
installed pylibjpeg/GDCM handlers), the *first frame only* is read. It is made 8-bit grayscale
(RGB to luminance, min-max normalised, MONOCHROME1 inverted) and prepared the way burned-in
text is drawn: at (near) full intensity over darker anatomy. So a light page (median above
mid-grey, a scanned document) is inverted first, then only the brightest pixels are kept
(:data:`TEXT_LEVEL`), drawn dark on white, upscaled to at least :data:`MIN_SIDE` pixels,
smoothed so block fonts read as strokes, and given a white margin. Tesseract reads that PNG
from stdin with page segmentation mode 11 (sparse text: annotations sit in corners, not in
paragraphs), which read the most of the synthetic capture of modes 3, 6, 11 and 12.

Words count when they hold :data:`MIN_ALNUM` or more letters and digits and Tesseract's
confidence is at least :data:`MIN_CONFIDENCE`. The words never leave this module: a finding
says how many words, which identifier shapes (:func:`appliance.verify.text.text_kinds`) and,
with ``--originals``, which original (by kind, pseudonym and keyed hash prefix) they matched.
OCR substitutes characters (0 read as 6), so an original matches when a run of the OCR text of
its length differs in at most one character in eight (none for forms under eight)
(:func:`_near`).

One ``tesseract`` process per image, run from a pool of ``os.cpu_count()`` threads: the work
is in the subprocess, so threads suffice.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import zlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom import dcmread

from appliance.settings import ConfigError
from appliance.verify.findings import Check, Findings
from appliance.verify.originals import MIN_CHARS, Original, name_forms
from appliance.verify.text import text_kinds

TESSERACT = "tesseract"
PSM = "11"
TIMEOUT_SECONDS = 60.0
MIN_ALNUM = 3
MIN_CONFIDENCE = 40.0
TEXT_LEVEL = 200  # of 255 after normalisation: burned-in text is drawn at (near) full intensity
MIN_SIDE = 768
MAX_SCALE = 4
MARGIN = 20
PATH = "PixelData (OCR, first frame)"


class OcrUnavailable(ConfigError):
    """Tesseract is not installed (``tce verify --ocr`` exits 2)."""


def tesseract_version() -> str:
    """Tesseract's version; :class:`OcrUnavailable` if it is not on PATH."""
    if shutil.which(TESSERACT) is None:
        raise OcrUnavailable("--ocr needs Tesseract, which is not installed (on Debian:"
                             " apt-get install tesseract-ocr)")
    done = subprocess.run([TESSERACT, "--version"], capture_output=True, text=True,
                          timeout=TIMEOUT_SECONDS, check=False)
    first = (done.stdout or done.stderr).splitlines()
    return first[0].removeprefix("tesseract ").strip() if first else "unknown"


@dataclass(frozen=True)
class OcrJob:
    path: Path
    rel: str
    dates: bool  # the policy does not keep full dates: a date in the pixels is an identifier


@dataclass
class OcrResult:
    rel: str
    lines: list[str] = field(default_factory=list)  # PHI: never reported, never logged
    problem: str = ""

    @property
    def words(self) -> int:
        return sum(len(line.split()) for line in self.lines)


@dataclass
class OcrTotals:
    version: str
    images: int = 0
    with_text: int = 0
    words: int = 0
    undecodable: int = 0
    seconds: float = 0.0


def first_frame_gray(path: Path) -> np.ndarray:
    """The first frame as 8-bit grayscale, text bright (raises if pixels cannot be decoded)."""
    ds = dcmread(path)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    pixels = np.asarray(ds.pixel_array)
    if frames > 1:
        pixels = pixels[0]
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    values = pixels.astype(np.float64)
    if samples == 3 and values.ndim == 3:
        if str(ds.get("PhotometricInterpretation", "")).startswith("YBR"):
            values = values[..., 0]  # Y is the luminance
        else:
            values = values @ np.array([0.299, 0.587, 0.114])
    if values.ndim != 2:
        raise ValueError(f"unexpected pixel array shape {pixels.shape}")
    low, high = float(values.min()), float(values.max())
    gray = ((values - low) * (255.0 / (high - low)) if high > low
            else np.zeros_like(values)).astype(np.uint8)
    if str(ds.get("PhotometricInterpretation", "")).strip() == "MONOCHROME1":
        gray = 255 - gray
    return gray


def prepare(gray: np.ndarray) -> np.ndarray:
    """Tesseract's input: the brightest pixels as dark strokes on white, upscaled, smoothed,
    with a margin (see the module docstring for why)."""
    if float(np.median(gray)) > 127:
        gray = 255 - gray  # a light page: its text is the dark part
    page = np.where(gray >= TEXT_LEVEL, 0, 255).astype(np.uint8)
    scale = min(MAX_SCALE, max(1, -(-MIN_SIDE // max(1, min(page.shape)))))
    if scale > 1:
        page = np.kron(page, np.ones((scale, scale), np.uint8))
        page = _box_blur(page, scale + 2)
    return np.pad(page, MARGIN, constant_values=255)


def _box_blur(page: np.ndarray, size: int) -> np.ndarray:
    padded = np.pad(page.astype(np.uint32), size // 2, mode="edge")
    total = np.zeros(page.shape, np.uint32)
    for dy in range(size):
        for dx in range(size):
            total += padded[dy:dy + page.shape[0], dx:dx + page.shape[1]]
    return (total // (size * size)).astype(np.uint8)


def png(gray: np.ndarray) -> bytes:
    """An 8-bit grayscale PNG (no imaging library is a dependency)."""
    height, width = gray.shape
    raw = b"".join(b"\x00" + gray[row].tobytes() for row in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 6))
            + chunk(b"IEND", b""))


def read_text(image: bytes) -> list[str]:
    """The lines Tesseract reads in a PNG, of kept words only (see the module docstring)."""
    done = subprocess.run([TESSERACT, "stdin", "stdout", "--psm", PSM, "tsv"], input=image,
                          capture_output=True, timeout=TIMEOUT_SECONDS, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"tesseract exited with status {done.returncode}")
    lines: dict[tuple[str, ...], list[str]] = {}
    for row in done.stdout.decode("utf-8", "replace").splitlines()[1:]:
        cells = row.split("\t")
        if len(cells) != 12 or cells[0] != "5":
            continue
        word = cells[11].strip()
        try:
            confidence = float(cells[10])
        except ValueError:
            continue
        if confidence >= MIN_CONFIDENCE and sum(ch.isalnum() for ch in word) >= MIN_ALNUM:
            lines.setdefault(tuple(cells[1:5]), []).append(word)
    return [" ".join(words) for words in lines.values()]


def ocr_one(job: OcrJob) -> OcrResult:
    """OCR one instance; a decoding or Tesseract failure is a problem to report, not a crash."""
    try:
        gray = first_frame_gray(job.path)
    except Exception as exc:  # any handler's failure: no decoder, corrupt fragment, ...
        return OcrResult(job.rel, problem=f"pixels not decodable for OCR ({type(exc).__name__})")
    try:
        return OcrResult(job.rel, read_text(png(prepare(gray))))
    except (OSError, RuntimeError, subprocess.TimeoutExpired) as exc:
        return OcrResult(job.rel, problem=f"Tesseract could not read the pixels"
                                          f" ({type(exc).__name__})")


def run_ocr(findings: Findings, jobs: Sequence[OcrJob], originals: list[Original] | None,
            version: str) -> OcrTotals:
    """OCR every job in a thread pool and record findings (never the words)."""
    totals = OcrTotals(version)
    forms = _original_forms(originals or [])
    by_rel = {job.rel: job for job in jobs}
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        for result in pool.map(ocr_one, jobs):
            totals.images += 1
            if result.problem:
                totals.undecodable += 1
                findings.warning(Check.OCR, result.rel, PATH, f"{result.problem}; review the"
                                 " pixels by eye")
                continue
            if not result.lines:
                continue
            totals.with_text += 1
            totals.words += result.words
            _judge(findings, result, by_rel[result.rel].dates, forms)
    return totals


def _judge(findings: Findings, result: OcrResult, dates: bool,
           forms: list[tuple[str, Original]]) -> None:
    count = result.words
    findings.warning(Check.OCR, result.rel, PATH,
                     f"burned-in text: {count} word{'s' if count != 1 else ''} found by OCR;"
                     " review the pixels")
    kinds: list[str] = []
    for line in result.lines:
        kinds += [k for k in text_kinds(line, dates=dates) if k not in kinds]
    if kinds:
        what = " and ".join(f"{'an' if k[0] in 'aeiouAEIOU' else 'a'} {k}" for k in kinds)
        findings.error(Check.OCR, result.rel, PATH,
                       f"burned-in text read by OCR looks like it holds {what}")
    text = _fold(" ".join(result.lines))
    matched: set[int] = set()
    for form, original in forms:
        if id(original) in matched or not _near(form, text):
            continue
        matched.add(id(original))
        findings.error(Check.LEAK, result.rel, PATH,
                       f"{original.kind} read by OCR in the pixels; pseudonym"
                       f" {original.pseudonym}, ref {original.ref}")


def _fold(text: str) -> str:
    return " ".join("".join(ch if ch.isalnum() else " " for ch in text.casefold()).split())


def _original_forms(originals: list[Original]) -> list[tuple[str, Original]]:
    out: list[tuple[str, Original]] = []
    for original in originals:
        for form, _label in name_forms(original.text):
            folded = _fold(form)
            if len(folded.replace(" ", "")) >= MIN_CHARS and (folded, original) not in out:
                out.append((folded, original))
    return out


def _near(form: str, text: str) -> bool:
    """``form`` occurs in ``text`` with at most one substituted character in eight."""
    size, allowed = len(form), len(form) // 8
    if size > len(text):
        return False
    target = np.frombuffer(form.encode("utf-32-le"), np.uint32)
    haystack = np.frombuffer(text.encode("utf-32-le"), np.uint32)
    windows = np.lib.stride_tricks.sliding_window_view(haystack, size)
    return bool(((windows != target).sum(axis=1) <= allowed).any())
