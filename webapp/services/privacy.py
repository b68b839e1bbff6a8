"""Privacy for minors: faces blurred for viewers who are not owners, when the study blurs faces."""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np

from db.review import StudySettings
from db.rows import FaceLabel
from db.services import LabelStore
from webapp.services.studies import face_crops

Box = tuple[float, float, float, float]
"""A face box ``(x1, y1, x2, y2)`` in pixels."""


def blur_image(image: np.ndarray, boxes: Sequence[Box], keep: int | None = None, radius: int = 12) -> np.ndarray:
    """The image with every face box blurred (privacy for minors), except box number ``keep``."""
    from PIL import Image, ImageFilter

    im = Image.fromarray(np.asarray(image, dtype=np.uint8))
    for k, (x1, y1, x2, y2) in enumerate(boxes):
        if k == keep:
            continue
        box = (max(0, int(x1)), max(0, int(y1)), min(im.width, int(x2) + 1), min(im.height, int(y2) + 1))
        if box[2] > box[0] and box[3] > box[1]:
            im.paste(im.crop(box).filter(ImageFilter.GaussianBlur(radius)), box[:2])
    return np.asarray(im)


def blurs(settings: StudySettings, owner: bool) -> bool:
    """Whether faces are blurred for this viewer: the study blurs faces (privacy for minors) and it is no owner."""
    return bool(settings.blur_faces) and not owner


def viewer_crops(
    store: LabelStore,
    face_ids: Sequence[int],
    settings: StudySettings,
    owner: bool,
    study: str,
    sharp: int | None = None,
) -> dict[int, bytes]:
    """Stored crops of a study's faces as this viewer may see them (face ``sharp``, the one being labelled, sharp).

    Faces of other studies are left out, like in :func:`face_crops`.
    """
    return {
        fid: blurred_crop(data, settings, owner, own_face=fid == sharp)
        for fid, data in face_crops(store, face_ids, study).items()
    }


def frame_faces(store: LabelStore, study: str, face: FaceLabel) -> tuple[list[Box], int]:
    """The boxes of every face on the frame (or image) of ``face``, and the index of ``face`` among them.

    Only that frame's faces are read (the faces' (media, frame) index), whatever the study's size.
    """
    if face.media_id not in store.recordings.media_in_study(study, [face.media_id]):
        return [face.box], 0
    same = store.recordings.frame_boxes(face.media_id, face.frame)
    boxes = [box for _, box in same]
    keep = next((i for i, (fid, _) in enumerate(same) if fid == face.face_id), None)
    if keep is None:
        boxes.append(face.box)
        keep = len(boxes) - 1
    return boxes, keep


def blurred_crop(data: bytes, settings: StudySettings, owner: bool, own_face: bool) -> bytes:
    """A face crop as the app may show it (privacy for minors).

    Blurred when the study blurs faces and the viewer is neither an owner nor the annotator labelling this face.
    """
    if not settings.blur_faces or owner or own_face:
        return data
    from PIL import Image, ImageFilter

    im = Image.open(io.BytesIO(data)).convert("RGB").filter(ImageFilter.GaussianBlur(8))
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()
