"""DFM50N result -> DICOM: a TID 1500 Measurement Report (Comprehensive 3D SR) per scored lesion, plus a
DICOM SEG of the scored lesion when the mask was not already one. Written with highdicom.

The SR is what a PACS, OHIF or a research DICOM pipeline can store next to the CT: it references the CT
series it was computed on and the lesion segment, carries the probability, threshold, risk category
(coded), combined-model probability, axes, and identifies the algorithm (name, version, FCIB weights
and classifier SHA-256, DEMO flag). A DEMO score says so in the series description, the algorithm name
and a coded evaluation, so no viewer can show it as a real score.

Codes without a standard equivalent use the private coding scheme ``99DFM50N`` (DICOM PS3.16 8.2:
designators starting with "99" are private); they are declared in the SR's Coding Scheme
Identification Sequence.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from DFM50NLib import atomic
from DFM50NLib.constants import COMBINED_THRESHOLD
from DFM50NLib.errors import InputError

SCHEME = "99DFM50N"
MANUFACTURER = "DFM50N (research software)"
SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"


def _code(value, meaning):
    import highdicom as hd

    return hd.sr.CodedConcept(value=value, scheme_designator=SCHEME, meaning=meaning)


def codes():
    """The private concepts used in the SR (a function so highdicom is imported only when writing)."""
    return {
        "probability": _code("P-OLM", "DFM50N probability of occult lymph node metastasis"),
        "threshold": _code("THRESHOLD", "DFM50N high-risk threshold"),
        "combined": _code("P-COMBINED", "Combined clinical model probability of OLM"),
        "combined_threshold": _code("COMBINED-THRESHOLD", "Combined clinical model threshold"),
        "coverage": _code("COVERAGE", "Fraction of lesion volume inside the 50 mm cube"),
        "risk": _code("RISK", "Risk of occult lymph node metastasis"),
        "high": _code("HIGH", "High risk of occult lymph node metastasis"),
        "low": _code("LOW", "Low risk of occult lymph node metastasis"),
        "combined_category": _code("COMBINED-RESULT", "Combined clinical model result"),
        "positive": _code("OLM-POSITIVE", "Occult lymph node metastasis predicted"),
        "negative": _code("OLM-NEGATIVE", "Occult lymph node metastasis not predicted"),
        "classifier": _code("CLASSIFIER", "DFM50N classifier"),
        "demo": _code("DEMO", "DEMO classifier: NOT a valid DFM50N score"),
        "published": _code("PUBLISHED", "Classifier given by the user (not the DEMO)"),
        "population": _code("IN-POPULATION", "Lesion within the population DFM50N was built on"),
        "warning": _code("WARNING", "DFM50N warning"),
    }


def refuse_if_not_dicom(ct, what="A DICOM SR"):
    """The CT's slice headers, or a clear refusal when the CT was not read from a DICOM series folder."""
    from DFM50NLib.io.dicom_source import ct_headers

    headers = ct_headers(ct) if ct is not None else []
    if not headers:
        where = (getattr(ct, "meta", None) or {}).get("path", "") if ct is not None else ""
        raise InputError(
            f"{what} must reference the CT's DICOM images, but this CT"
            + (f" ({where})" if where else "")
            + " was not read from a DICOM series. Score the CT's DICOM series folder (--image DICOM_DIR), "
            "or leave out --dicom-sr."
        )
    return headers


def write_dicom_sr(result, ct, prepared_mask, out_dir, *, mask_path=None, segment=None) -> dict:
    """Write ``<case>.dfm50n.sr.dcm`` (and ``<case>.dfm50n.seg.dcm`` unless the mask was a DICOM-SEG).

    Returns {"sr": path, "seg": path (the referenced SEG), "tracking_uid": uid}. Files are written atomically.
    """
    try:
        import highdicom  # noqa: F401
    except ImportError:
        raise InputError("Writing DICOM SR needs highdicom: pip install 'dfm50n[dicomseg]'.") from None
    if prepared_mask is None:
        raise InputError("A DICOM SR is written for physical-geometry scores only (no lesion on the CT grid).")
    headers = [with_type2_attributes(h) for h in refuse_if_not_dicom(ct)]
    out_dir = Path(out_dir)
    from DFM50NLib.atomic import safe_stem

    stem = safe_stem(result.case_id)
    paths = {}
    mask_path = mask_path or result.mask_path
    from DFM50NLib.io import is_dicom_seg

    if mask_path and is_dicom_seg(mask_path):
        import pydicom

        seg = pydicom.dcmread(str(mask_path), stop_before_pixels=True)
        segment_number = _segment_number(seg, result, segment)
        paths["seg"] = Path(mask_path)
    else:
        seg = copy_deidentification(lesion_seg(result, headers, prepared_mask), headers[0])
        segment_number = 1
        paths["seg"] = _save(seg, out_dir / f"{stem}.dfm50n.seg.dcm")
    sr = copy_deidentification(measurement_report(result, headers, seg, segment_number), headers[0])
    paths["sr"] = _save(sr, out_dir / f"{stem}.dfm50n.sr.dcm")
    paths["tracking_uid"] = _tracking_uid(sr)
    return paths


# Type 2 attributes the SR and SEG copy from the CT (Patient and General Study modules): they must be present,
# possibly empty. A series without PatientBirthDate (common after anonymisation) made highdicom raise AttributeError.
TYPE2_COPIED = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
)


def with_type2_attributes(header):
    """The CT header with every type 2 attribute the SR/SEG copy present (empty when the CT lacks it)."""
    for keyword in TYPE2_COPIED:
        if keyword not in header:
            setattr(header, keyword, "")
    return header


NO_METHOD_GIVEN = "Not stated in the source CT (PatientIdentityRemoved YES)"  # LO: 64 characters at most


def copy_deidentification(ds, header):
    """PatientIdentityRemoved YES needs DeidentificationMethod or its code sequence (type 1C): copied from the
    CT, or a text saying the CT did not name one (the SR must not claim a method nobody recorded)."""
    if str(getattr(header, "PatientIdentityRemoved", "")).upper() != "YES":
        return ds
    ds.PatientIdentityRemoved = "YES"
    for keyword in ("DeidentificationMethod", "DeidentificationMethodCodeSequence"):
        if keyword in header:
            setattr(ds, keyword, header[keyword].value)
    if "DeidentificationMethod" not in ds and "DeidentificationMethodCodeSequence" not in ds:
        ds.DeidentificationMethod = NO_METHOD_GIVEN
    return ds


def _save(ds, path):
    with atomic.atomic_path(path) as tmp:
        ds.save_as(str(tmp), enforce_file_format=True)
    return Path(path)


def _segment_number(seg, result, segment=None) -> int:
    """The scored segment of a DICOM-SEG mask, chosen as `read_mask` chose it (name, or number)."""
    from DFM50NLib.io.dicom_seg import choose_dicom_segment, dicom_seg_segments

    label = None if result.label is None else int(result.label)
    return choose_dicom_segment(result.mask_path, dicom_seg_segments(seg), label, segment)


def lesion_seg(result, headers, prepared_mask):
    """A BINARY DICOM SEG of the scored lesion (largest component, as scored) on the CT's own slices."""
    import highdicom as hd
    from pydicom.sr.codedict import codes as sr_codes

    pm = prepared_mask
    a = np.asarray(pm.volume.array)
    i0, j0, k0 = pm.offset_ijk
    rows, cols = int(headers[0].Rows), int(headers[0].Columns)
    frames = np.zeros((a.shape[2], rows, cols), np.uint8)
    for n in range(a.shape[2]):
        frames[n, j0 : j0 + a.shape[1], i0 : i0 + a.shape[0]] = a[:, :, n].T  # [row=j, col=i]
    sources = [headers[k] for k in range(k0, k0 + a.shape[2])]
    desc = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label=ascii_text(f"{result.case_id} lesion")[:64],
        segmented_property_category=sr_codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=sr_codes.SCT.Neoplasm,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
        tracking_uid=hd.UID(),
        tracking_id=ascii_text(f"{result.case_id} lesion")[:64],
    )
    seg = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=frames,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[desc],
        series_instance_uid=hd.UID(),
        series_number=9051,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer=MANUFACTURER,
        manufacturer_model_name="DFM50N",
        software_versions=str(result.software_version),
        device_serial_number="none",
        series_description="DFM50N scored lesion (largest component)",
        omit_empty_frames=True,
    )
    return seg


def _algorithm(result):
    import highdicom as hd

    name = "DFM50N" + (" DEMO classifier (NOT the published model)" if result.classifier_is_demo else "")
    params = [  # TEXT items (UT): full hashes, no length limit
        f"classifier={result.classifier_name}",
        f"classifier_sha256={result.classifier_sha256}",
        f"fcib_weights_sha256={result.fcib_weights_sha256}",
        f"demo={'yes' if result.classifier_is_demo else 'no'}",
        f"geometry={result.geometry}; orientation={result.orientation}; centre={result.center_method}",
    ]
    return hd.sr.AlgorithmIdentification(name=name[:64], version=str(result.software_version)[:64], parameters=params)


def measurement_report(result, headers, seg, segment_number):
    """The Comprehensive 3D SR holding one TID 1500 report with the lesion's TID 1411 measurements group."""
    import highdicom as hd
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence
    from pydicom.sr.codedict import codes as sr_codes

    c = codes()
    alg = _algorithm(result)
    unit_none = sr_codes.UCUM.NoUnits
    measurements = [
        hd.sr.Measurement(name=c["probability"], value=float(result.score), unit=unit_none, algorithm_id=alg),
        hd.sr.Measurement(name=c["threshold"], value=float(result.threshold), unit=unit_none, algorithm_id=alg),
        hd.sr.Measurement(
            name=sr_codes.SCT.Volume, value=float(result.mask_volume_mm3), unit=sr_codes.UCUM.CubicMillimeter
        ),
        hd.sr.Measurement(name=c["coverage"], value=float(result.coverage), unit=unit_none, algorithm_id=alg),
    ]
    if result.long_axis_mm is not None:
        measurements.append(
            hd.sr.Measurement(
                name=sr_codes.SCT.LongAxis, value=float(result.long_axis_mm), unit=sr_codes.UCUM.Millimeter
            )
        )
    if result.short_axis_cm is not None:
        measurements.append(
            hd.sr.Measurement(
                name=sr_codes.SCT.ShortAxis, value=float(result.short_axis_cm) * 10.0, unit=sr_codes.UCUM.Millimeter
            )
        )
    if result.combined_probability is not None:
        measurements += [
            hd.sr.Measurement(name=c["combined"], value=float(result.combined_probability), unit=unit_none),
            hd.sr.Measurement(name=c["combined_threshold"], value=float(COMBINED_THRESHOLD), unit=unit_none),
        ]
    evaluations = [
        hd.sr.QualitativeEvaluation(name=c["risk"], value=c["high"] if result.high_risk else c["low"]),
        hd.sr.QualitativeEvaluation(
            name=c["classifier"], value=c["demo"] if result.classifier_is_demo else c["published"]
        ),
        hd.sr.QualitativeEvaluation(
            name=c["population"],
            value=sr_codes.SCT.No if out_of_population(result) else sr_codes.SCT.Yes,
        ),
    ]
    if result.combined_positive is not None:
        evaluations.append(
            hd.sr.QualitativeEvaluation(
                name=c["combined_category"], value=c["positive"] if result.combined_positive else c["negative"]
            )
        )
    tracking = hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=ascii_text(f"{result.case_id} lesion")[:64])
    group = hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=tracking,
        referenced_segment=hd.sr.ReferencedSegment(
            sop_class_uid=str(seg.SOPClassUID),
            sop_instance_uid=str(seg.SOPInstanceUID),
            segment_number=int(segment_number),
            source_series=hd.sr.SourceSeriesForSegmentation(str(headers[0].SeriesInstanceUID)),
        ),
        finding_type=sr_codes.SCT.Neoplasm,
        finding_sites=[hd.sr.FindingSite(anatomic_location=sr_codes.SCT.Lung)],
        algorithm_id=alg,
        measurements=measurements,
        qualitative_evaluations=evaluations,
    )
    for note in result.warnings:  # every warning the other front ends show, as text, in the lesion's group
        group[0].ContentSequence.append(
            hd.sr.TextContentItem(
                name=c["warning"],
                value=ascii_text(note)[:1024],
                relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
            )
        )
    observer = hd.sr.ObserverContext(
        observer_type=sr_codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=hd.UID(), name="DFM50N", manufacturer_name=MANUFACTURER, model_name=str(result.software_version)
        ),
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=sr_codes.LN.CTUnspecifiedBodyRegion,
        imaging_measurements=[group],
    )
    sr = hd.sr.Comprehensive3DSR(
        evidence=list(headers) + [seg],
        content=report[0],
        series_instance_uid=hd.UID(),
        series_number=9050,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer=MANUFACTURER,
        series_description=series_description(result),
    )
    scheme = Dataset()
    scheme.CodingSchemeDesignator = SCHEME
    scheme.CodingSchemeName = "DFM50N private concepts"
    scheme.CodingSchemeResponsibleOrganization = "DFM50N project"
    sr.CodingSchemeIdentificationSequence = Sequence([scheme])
    return sr


def ascii_text(text) -> str:
    """The SR is written in the default character set: dashes as '-', anything else non-ASCII as '?'."""
    text = str(text).replace("\u2014", "-").replace("\u2013", "-").replace("\u2264", "<=").replace("\u2265", ">=")
    return text.encode("ascii", "replace").decode("ascii")


def series_description(result) -> str:
    """64 characters at most (LO); a DEMO score says so first."""
    if result.classifier_is_demo:
        return "DFM50N DEMO - NOT A VALID SCORE - research use only"
    return "DFM50N OLM risk score - research use only"


def out_of_population(result) -> bool:
    """Outside what DFM50N was built on: cT1-2 (long axis <= 50 mm) and a lesion inside the cube."""
    from DFM50NLib.constants import POPULATION_MAX_LONG_AXIS_MM

    long_axis = result.long_axis_mm
    return bool((long_axis is not None and long_axis > POPULATION_MAX_LONG_AXIS_MM) or result.coverage < 0.999)


def _tracking_uid(sr) -> str:
    for item in _walk(sr.ContentSequence):
        name = item.ConceptNameCodeSequence[0]
        if str(name.CodeValue) == "112040" and hasattr(item, "UID"):
            return str(item.UID)
    return ""


def _walk(seq):
    for item in seq:
        yield item
        yield from _walk(getattr(item, "ContentSequence", None) or [])
