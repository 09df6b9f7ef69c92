"""README.TXT and INDEX.HTM for a PDI volume, generated from the DICOMDIR records only.

Why from the records: a medium is handed to people outside the appliance. README.TXT must not
carry any patient data at all (IHE PDI), so it only has counts, modalities and how the medium
is laid out. INDEX.HTM lists what the DICOMDIR already lists (pseudonymous Patient ID, Study
Date, Study Description, Modality, Series Number), so it cannot reveal more than the DICOMDIR
does. Both are pure ASCII: README.TXT with CR LF line ends so that any system shows it, and
INDEX.HTM well-formed XHTML with character references for anything beyond ASCII.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from pdi.dicomdir import DirNode
from pdi.profiles import DESCRIPTIONS

README = "README.TXT"
INDEX = "INDEX.HTM"


@dataclass(frozen=True)
class VolumeSummary:
    number: int
    total: int
    file_set_id: str
    profile: str
    patients: int
    studies: int
    series: int
    instances: int
    dicom_bytes: int
    modalities: tuple[str, ...]
    notes: tuple[str, ...]
    created: datetime
    producer: str
    version: str
    institution: str
    web: bool


def _ascii(text: str) -> str:
    return text.encode("ascii", "replace").decode("ascii")


def readme_text(s: VolumeSummary) -> bytes:
    """README.TXT (ISO 9660 8.3 name, root of the volume): no patient data, ever."""
    size_mb = s.dicom_bytes / 1_000_000
    lines = [
        "DE-IDENTIFIED DICOM MEDIA (IHE Portable Data for Imaging)",
        "=" * 57,
        "",
        "This medium holds DICOM images and documents that were DE-IDENTIFIED",
        "(pseudonymized) before they were written. Names and identifiers in the",
        "DICOM files are pseudonyms, not those of the patient. This file contains",
        "no patient data.",
        "",
        f"Volume          {s.number} of {s.total}"
        + ("  (each volume is a complete, independent DICOM File-set)" if s.total > 1 else ""),
        f"File-set ID     {s.file_set_id}",
        f"Created         {s.created.strftime('%Y-%m-%d %H:%M')} UTC",
        f"Created by      {_ascii(s.producer)} {_ascii(s.version)}",
    ]
    if s.institution:
        lines.append(f"Institution     {_ascii(s.institution)}")
    lines += [
        f"Media profile   {s.profile}",
        *_wrap(DESCRIPTIONS[s.profile], " " * 16, " " * 16),
        "",
        "CONTENTS",
        f"  Patients      {s.patients}",
        f"  Studies       {s.studies}",
        f"  Series        {s.series}",
        f"  Instances     {s.instances}",
        f"  Modalities    {', '.join(s.modalities)}",
        f"  DICOM data    {size_mb:.1f} MB",
        "",
        "LAYOUT",
        "  DICOMDIR      the DICOM directory (PS3.10): open this file, or the",
        "                medium, with a DICOM viewer",
        "  DICOM/        the DICOM files, one folder per patient, study and series:",
        "                DICOM/PTnnnnnn/STnnnnnn/SEnnnnnn/IMnnnnnn (images), SRnnnnnn",
        "                (reports), KOnnnnnn (key images), PRnnnnnn (presentation",
        "                states). File names have no extension, as DICOM requires.",
    ]
    if s.web:
        lines.append("  INDEX.HTM     a list of the studies and series; open it in a web browser")
    lines += [
        "  README.TXT    this file",
        "",
        "VIEWER",
        "  No viewer is included and nothing on this medium runs by itself.",
        "  Use any DICOM viewer that reads a DICOMDIR.",
    ]
    if s.notes:
        lines += ["", "NOTES"]
        for note in s.notes:
            lines += _wrap(f"- {_ascii(note)}", "  ", "    ")
    return ("\r\n".join(lines) + "\r\n").encode("ascii")


def _wrap(text: str, first: str, rest: str, width: int = 76) -> list[str]:
    out: list[str] = []
    line = first
    for word in text.split():
        if len(line) + len(word) + 1 > width and line.strip():
            out.append(line.rstrip())
            line = rest
        line += word + " "
    out.append(line.rstrip())
    return out


def _e(value: object) -> str:
    """Escape for XHTML; control characters (not allowed in XML 1.0) are dropped."""
    text = "" if value is None else str(value)
    text = "".join(ch for ch in text if ch >= " " or ch in "\t\n")
    return html.escape(text, quote=True)


def _href(file_id: object) -> str:
    parts = [file_id] if isinstance(file_id, str) else list(file_id)  # type: ignore[call-overload]
    return _e("/".join(str(part) for part in parts))


def _date(value: object) -> str:
    text = "" if value is None else str(value)
    if len(text) == 8 and text.isdigit():
        return f"{text[:4]}-{text[4:6]}-{text[6:]}"
    return text


def index_html(s: VolumeSummary, roots: Sequence[DirNode]) -> bytes:
    """INDEX.HTM: studies and series with relative links to the DICOM files."""
    title = f"DICOM media {s.file_set_id} - volume {s.number} of {s.total}"
    out = [
        '<?xml version="1.0" encoding="US-ASCII"?>',
        '<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Strict//EN" '
        '"http://www.w3.org/TR/xhtml1/DTD/xhtml1-strict.dtd">',
        '<html xmlns="http://www.w3.org/1999/xhtml" xml:lang="en" lang="en">',
        "<head>",
        '<meta http-equiv="Content-Type" content="text/html; charset=US-ASCII" />',
        f"<title>{_e(title)}</title>",
        "</head>",
        "<body>",
        f"<h1>{_e(title)}</h1>",
        "<p>De-identified DICOM data. Open the DICOMDIR file with a DICOM viewer; the links "
        "below lead to the individual DICOM files. See "
        f'<a href="README.TXT">README.TXT</a>. Media profile: {_e(s.profile)}.</p>',
    ]
    for patient in roots:
        out.append(f"<h2>Patient ID {_e(patient.record.get('PatientID'))}</h2>")
        for study in patient.children:
            rec = study.record
            heading = " - ".join(x for x in (_e(_date(rec.get("StudyDate"))),
                                             _e(rec.get("StudyDescription"))) if x)
            out.append(f"<h3>Study {_e(rec.get('StudyID'))}: {heading}</h3>")
            out.append("<table>")
            out.append("<tr><th>Series</th><th>Modality</th><th>Instances</th>"
                       "<th>Files</th></tr>")
            for series in study.children:
                srec = series.record
                links = " ".join(
                    f'<a href="{_href(leaf.record.ReferencedFileID)}">'
                    f"{_e(leaf.record.get('InstanceNumber'))}</a>"
                    for leaf in series.children
                )
                out.append(
                    f"<tr><td>{_e(srec.get('SeriesNumber'))}</td>"
                    f"<td>{_e(srec.get('Modality'))}</td>"
                    f"<td>{len(series.children)}</td><td>{links}</td></tr>"
                )
            out.append("</table>")
    out += [f"<p>Created {_e(s.created.strftime('%Y-%m-%d %H:%M'))} UTC by "
            f"{_e(s.producer)} {_e(s.version)}.</p>", "</body>", "</html>"]
    return ("\n".join(out) + "\n").encode("ascii", "xmlcharrefreplace")
