"""Write SynthCXR in the real data sets' layouts, so the real readers ingest it.

    out_dir/
      synthcxr.jsonl                      ground truth per study (findings with side/location, labels, qa)
      mimic-cxr-jpg/                      MIMIC-CXR-JPG 2.0.0 + the MIMIC-CXR free-text reports
        mimic-cxr-2.0.0-metadata.csv      dicom_id,subject_id,study_id,PerformedProcedureStepDescription,
                                          ViewPosition,Rows,Columns,StudyDate,StudyTime,
                                          ProcedureCodeSequence_CodeMeaning,ViewCodeSequence_CodeMeaning,
                                          PatientOrientationCodeSequence_CodeMeaning
        mimic-cxr-2.0.0-chexpert.csv      subject_id,study_id,<14 labels, alphabetical> (1.0/0.0/-1.0/blank)
        mimic-cxr-2.0.0-split.csv         dicom_id,study_id,subject_id,split (train/validate/test)
        patients.csv                      subject_id,gender,anchor_age,anchor_year,anchor_year_group,dod: MIMIC-IV's
                                          hosp/patients table, which real MIMIC-CXR studies are joined with (one
                                          SynthCXR patient per study; anchor_year = the study's year, so
                                          anchor_age is the age at the study)
        files/p10/p10000000/s50000000/<dicom_id>.jpg
        files/p10/p10000000/s50000000.txt
      openi/                              Open-I / IU X-ray
        ecgen-radiology/1.xml             <AbstractText Label="FINDINGS"|"IMPRESSION"|...>, <MeSH>, <parentImage id=...>
        NLMCXR_png/CXR1_1_IM-0001-4001.png
      vqa-rad/                            VQA-RAD
        VQA_RAD Dataset Public.json       [{qid, image_name, image_organ, question, answer, answer_type,
                                            question_type, phrase_type, ...}]
        VQA_RAD Image Folder/synpic100000.jpg

With `gzip_tables=True` the four MIMIC tables are written as `.csv.gz`, as PhysioNet ships them.
"""

import csv
import gzip
import hashlib
import io
import json
import random
import xml.etree.ElementTree as ElementTree
from pathlib import Path

from tqdm.auto import tqdm

from processing.chexpert import CHEXPERT_LABELS

from .anatomy import LOBE_NAMES
from .generator import generate_synthcxr
from .reports import mimic_report_text

LAYOUTS = ("mimic-cxr-jpg", "openi", "vqa-rad")
METADATA_COLUMNS = [
    "dicom_id",
    "subject_id",
    "study_id",
    "PerformedProcedureStepDescription",
    "ViewPosition",
    "Rows",
    "Columns",
    "StudyDate",
    "StudyTime",
    "ProcedureCodeSequence_CodeMeaning",
    "ViewCodeSequence_CodeMeaning",
    "PatientOrientationCodeSequence_CodeMeaning",
]
# MIMIC-CXR-JPG's label file orders the 14 observations alphabetically.
CHEXPERT_FILE_COLUMNS = ["subject_id", "study_id", *sorted(CHEXPERT_LABELS)]
SPLIT_COLUMNS = ["dicom_id", "study_id", "subject_id", "split"]
PATIENTS_COLUMNS = ["subject_id", "gender", "anchor_age", "anchor_year", "anchor_year_group", "dod"]
ANCHOR_YEAR_GROUPS = ("2008 - 2010", "2011 - 2013", "2014 - 2016", "2017 - 2019")
VQA_RAD_JSON = "VQA_RAD Dataset Public.json"
VQA_RAD_IMAGES = "VQA_RAD Image Folder"
JPEG_QUALITY = 95  # MIMIC-CXR-JPG's own quality


def _label_cell(value):
    return "" if value is None else f"{float(value):.1f}"


def _jpeg(image):
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


def _png(image):
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def _digest(study):
    return hashlib.sha1(f"{study.dicom_id}".encode()).digest()


class _MimicWriter:
    def __init__(self, root, gzip_tables):
        self.root = root
        suffix = ".csv.gz" if gzip_tables else ".csv"
        self.tables = {
            name: self._open(root / f"mimic-cxr-2.0.0-{name}{suffix}", columns)
            for name, columns in (
                ("metadata", METADATA_COLUMNS),
                ("chexpert", CHEXPERT_FILE_COLUMNS),
                ("split", SPLIT_COLUMNS),
            )
        }
        self.tables["patients"] = self._open(root / f"patients{suffix}", PATIENTS_COLUMNS)

    def _open(self, path, columns):
        # gzip with mtime=0 so the same data give the same bytes.
        raw = gzip.GzipFile(path, "wb", mtime=0) if path.name.endswith(".gz") else open(path, "wb")
        handle = io.TextIOWrapper(raw, encoding="utf-8", newline="")
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(columns)
        return handle, writer

    def add(self, study, text_rng):
        subject, study_id = str(study.subject_id), str(study.study_id)
        folder = self.root / "files" / f"p{subject[:2]}" / f"p{subject}"
        (folder / f"s{study_id}").mkdir(parents=True, exist_ok=True)
        (folder / f"s{study_id}" / f"{study.dicom_id}.jpg").write_bytes(_jpeg(study.image))
        report = mimic_report_text(study.findings_text, study.impression_text, study.view, study.indication, text_rng)
        (folder / f"s{study_id}.txt").write_text(report, encoding="utf-8")

        digest = _digest(study)
        date = f"21{digest[0] % 90 + 10:02d}{digest[1] % 12 + 1:02d}{digest[2] % 28 + 1:02d}"
        time = f"{digest[3] % 24:02d}{digest[4] % 60:02d}{digest[5] % 60:02d}.{digest[6] % 1000:03d}"
        description = "CHEST (PORTABLE AP)" if study.view == "AP" else "CHEST (PA AND LAT)"
        width, height = study.image.size
        self.tables["metadata"][1].writerow(
            [
                study.dicom_id,
                subject,
                study_id,
                description,
                study.view,
                height,
                width,
                date,
                time,
                description,
                "antero-posterior" if study.view == "AP" else "postero-anterior",
                "Recumbent" if study.view == "AP" else "Erect",
            ]
        )
        self.tables["chexpert"][1].writerow(
            [subject, study_id, *(_label_cell(study.labels[name]) for name in sorted(CHEXPERT_LABELS))]
        )
        self.tables["split"][1].writerow([study.dicom_id, study_id, subject, study.split])
        year_group = ANCHOR_YEAR_GROUPS[digest[7] % len(ANCHOR_YEAR_GROUPS)]
        self.tables["patients"][1].writerow([subject, study.sex, study.age, date[:4], year_group, ""])

    def close(self):
        for handle, _ in self.tables.values():
            handle.close()


_MESH_NAMES = {
    "cardiomegaly": "Cardiomegaly",
    "pleural_effusion": "Pleural Effusion",
    "pneumothorax": "Pneumothorax",
    "consolidation": "Consolidation",
    "nodule": "Nodule",
    "atelectasis": "Pulmonary Atelectasis",
    "edema": "Pulmonary Edema",
}


def _mesh_terms(study):
    terms = []
    for finding in study.findings:
        if finding.kind == "support_device":
            continue
        qualifiers = []
        if finding.location in LOBE_NAMES:
            qualifiers.append(f"lung, {LOBE_NAMES[finding.location]}")
        elif finding.location:
            qualifiers.append(finding.location)
        if finding.side:
            qualifiers.append(finding.side)
        if finding.severity:
            qualifiers.append(finding.severity)
        terms.append("/".join([_MESH_NAMES[finding.kind], *qualifiers]))
    return terms or ["normal"]


class _OpenIWriter:
    def __init__(self, root):
        self.reports, self.images = root / "ecgen-radiology", root / "NLMCXR_png"
        self.reports.mkdir(parents=True, exist_ok=True)
        self.images.mkdir(parents=True, exist_ok=True)

    def add(self, study):
        number = study.index + 1
        image_id = f"CXR{number}_1_IM-{number % 10000:04d}-{4001 + study.index % 5000}"
        (self.images / f"{image_id}.png").write_bytes(_png(study.image))

        root = ElementTree.Element("eCitation")
        ElementTree.SubElement(root, "meta", type="rr")
        ElementTree.SubElement(root, "uId", id=f"CXR{number}")
        ElementTree.SubElement(root, "pmcId", id=str(number))
        ElementTree.SubElement(root, "docSource").text = "CXR"
        ElementTree.SubElement(root, "IUXRId", id=str(number))
        ElementTree.SubElement(root, "licenseType").text = "open-access"
        ElementTree.SubElement(root, "publisher").text = "SynthCXR"
        ElementTree.SubElement(root, "title").text = "SynthCXR chest X-ray collection"
        ElementTree.SubElement(root, "specialty").text = "pulmonary diseases"
        ElementTree.SubElement(root, "subset").text = "CXR"
        citation = ElementTree.SubElement(root, "MedlineCitation", Owner="SynthCXR", Status="supplied by publisher")
        article = ElementTree.SubElement(citation, "Article", PubModel="Electronic")
        ElementTree.SubElement(article, "ArticleTitle").text = "SynthCXR chest X-ray collection"
        abstract = ElementTree.SubElement(article, "Abstract")
        comparison = "None." if study.index % 3 else "XXXX"
        indication = study.indication.replace("___", "XXXX")
        for label, text in (
            ("COMPARISON", comparison),
            ("INDICATION", indication),
            ("FINDINGS", study.findings_text),
            ("IMPRESSION", study.impression_text),
        ):
            ElementTree.SubElement(abstract, "AbstractText", Label=label).text = text
        mesh = ElementTree.SubElement(root, "MeSH")
        for term in _mesh_terms(study):
            ElementTree.SubElement(mesh, "major").text = term
        parent = ElementTree.SubElement(root, "parentImage", id=image_id)
        ElementTree.SubElement(parent, "figureId").text = "F1"
        ElementTree.SubElement(parent, "caption").text = f"Xray Chest {study.view}"
        panel = ElementTree.SubElement(parent, "panel", type="single")
        ElementTree.SubElement(panel, "url").text = f"/hadoop/storage/radiology/extract/{image_id}.jpg"
        ElementTree.indent(root, space="   ")
        xml = ElementTree.tostring(root, encoding="unicode")
        (self.reports / f"{number}.xml").write_text(
            f'<?xml version="1.0" encoding="utf-8"?>\n{xml}\n', encoding="utf-8"
        )


class _VqaRadWriter:
    def __init__(self, root):
        self.root, self.images = root, root / VQA_RAD_IMAGES
        self.images.mkdir(parents=True, exist_ok=True)
        self.entries = []

    def add(self, study):
        image_name = f"synpic{100000 + study.index}.jpg"
        (self.images / image_name).write_bytes(_jpeg(study.image))
        phrase_type = "test_freeform" if study.split == "test" else "freeform"
        for number, qa in enumerate(study.qa):
            qid = len(self.entries) + 1
            self.entries.append(
                {
                    "qid": qid,
                    "phrase_type": phrase_type,
                    "qid_linked_id": f"{study.dicom_id[:8]}-{number:04d}",
                    "image_name": image_name,
                    "image_organ": "CHEST",
                    "evaluation": "given",
                    "question": qa["question"],
                    "question_rephrase": "NULL",
                    "question_relation": "NULL",
                    "question_frame": "NULL",
                    "question_type": qa["question_type"],
                    "answer": qa["answer"],
                    "answer_type": qa["answer_type"],
                }
            )

    def close(self):
        with open(self.root / VQA_RAD_JSON, "w", encoding="utf-8") as handle:
            json.dump(self.entries, handle, indent=1)
            handle.write("\n")


def _truth_record(study):
    return {
        "index": study.index,
        "subject_id": study.subject_id,
        "study_id": study.study_id,
        "dicom_id": study.dicom_id,
        "split": study.split,
        "view": study.view,
        "sex": study.sex,
        "age": study.age,
        "report": study.report,
        "labels": study.labels,
        "findings": [f.as_dict() for f in study.findings],
        "qa": study.qa,
    }


def write_synthcxr(
    out_dir, n, size=512, seed=0, layouts=LAYOUTS, *, gzip_tables=False, num_workers=0, progress=True, **options
):
    """Generate `n` SynthCXR studies and write them under `out_dir` in `layouts` (see module doc).

    Returns {layout name: its folder}. `options` go to `generate_synthcxr` (mix, max_findings,
    uncertain_rate, ...). The same arguments give the same bytes.
    """
    unknown = set(layouts) - set(LAYOUTS)
    if unknown:
        raise ValueError(f"unknown layouts {sorted(unknown)}; choose from {LAYOUTS}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    folders = {name: out_dir / name for name in layouts}
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)
    mimic = _MimicWriter(folders["mimic-cxr-jpg"], gzip_tables) if "mimic-cxr-jpg" in folders else None
    openi = _OpenIWriter(folders["openi"]) if "openi" in folders else None
    vqa = _VqaRadWriter(folders["vqa-rad"]) if "vqa-rad" in folders else None
    studies = generate_synthcxr(n, size=size, seed=seed, num_workers=num_workers, **options)
    with open(out_dir / "synthcxr.jsonl", "w", encoding="utf-8") as truth:
        for study in tqdm(studies, total=n, desc="SynthCXR", unit="study", disable=not progress):
            truth.write(json.dumps(_truth_record(study)) + "\n")
            if mimic:
                mimic.add(study, random.Random(f"{seed}:{study.index}:mimic"))
            if openi:
                openi.add(study)
            if vqa:
                vqa.add(study)
    for writer in (mimic, vqa):
        if writer:
            writer.close()
    return folders


__all__ = [
    "CHEXPERT_FILE_COLUMNS", "LAYOUTS", "METADATA_COLUMNS", "PATIENTS_COLUMNS", "SPLIT_COLUMNS", "write_synthcxr",
]
