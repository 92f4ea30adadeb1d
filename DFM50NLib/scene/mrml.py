"""Slicer nodes <-> `Volume`: the only place that knows how MRML stores geometry.

Everything is expressed in the CT node's own coordinate frame (the frame its IJKToRAS matrix maps
into, i.e. below its parent transform). A segment under another *linear* transform is brought into
that frame by matrix algebra - the same as hardening it on a copy, without copying any voxel. A
non-linear transform between the two is refused: the mask would have to be warped, silently.
Nothing here modifies a user's node; temporary nodes are never created.
"""

from __future__ import annotations

import hashlib

import numpy as np
import slicer
import vtk

from DFM50NLib.errors import InputError
from DFM50NLib.geometry.volume import Volume

BINARY_LABELMAP = "Binary labelmap"


def matrix_to_numpy(m: vtk.vtkMatrix4x4) -> np.ndarray:
    return np.array([[m.GetElement(r, c) for c in range(4)] for r in range(4)], dtype=float)


def numpy_to_matrix(a) -> vtk.vtkMatrix4x4:
    m = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            m.SetElement(r, c, float(a[r][c]))
    return m


def ijk_to_ras(volume_node) -> np.ndarray:
    m = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(m)
    return matrix_to_numpy(m)


def volume_from_node(volume_node, name=None) -> Volume:
    """A scalar volume node as a `Volume` (array is a view: a 512x512x600 CT is not copied)."""
    if volume_node is None or volume_node.GetImageData() is None:
        raise InputError("No CT volume selected, or the volume has no voxels: load the CT and select it.")
    if volume_node.GetImageData().GetNumberOfScalarComponents() != 1:
        raise InputError(
            f"Volume '{volume_node.GetName()}' has several components per voxel (colour or "
            "vector image); DFM50N needs the CT in Hounsfield units."
        )
    arr = slicer.util.arrayFromVolume(volume_node).T  # [k,j,i] -> [i,j,k], a view
    return Volume(arr, ijk_to_ras(volume_node), name or volume_node.GetName(), {"node_id": volume_node.GetID()})


def relative_matrix(from_node, to_node) -> np.ndarray:
    """4x4 mapping `from_node`'s local coordinates to `to_node`'s; InputError if it is non-linear."""
    p_from, p_to = from_node.GetParentTransformNode(), to_node.GetParentTransformNode()
    if p_from is p_to or (p_from is not None and p_to is not None and p_from.GetID() == p_to.GetID()):
        return np.eye(4)
    general = vtk.vtkGeneralTransform()
    slicer.vtkMRMLTransformNode.GetTransformBetweenNodes(p_from, p_to, general)
    linear = vtk.vtkTransform()
    if not slicer.vtkMRMLTransformNode.IsGeneralTransformLinear(general, linear):
        raise InputError(
            f"'{from_node.GetName()}' and '{to_node.GetName()}' are related by a non-linear "
            "(warping) transform. Harden the transform on the segmentation (Transforms module, "
            "'Harden transform') or put both nodes under the same transform, then score again."
        )
    return matrix_to_numpy(linear.GetMatrix())


def segment_labelmap(segmentation_node, segment_id):
    """(uint8 [i,j,k] array of this segment only, its IJK->local RAS 4x4), cropped to the segment.

    Uses the binary labelmap representation; when the segmentation holds only surfaces, converts
    a private copy so that the user's node gains no representation it did not have.
    """
    segmentation = segmentation_node.GetSegmentation()
    segment = segmentation.GetSegment(segment_id) if segment_id else None
    if segment is None:
        raise InputError(
            f"Segment '{segment_id}' not found in '{segmentation_node.GetName()}': pick the lesion segment again."
        )
    image = slicer.vtkOrientedImageData()
    if segmentation.ContainsRepresentation(BINARY_LABELMAP):
        ok = segmentation_node.GetBinaryLabelmapRepresentation(segment_id, image)
    else:
        copy = slicer.vtkSegmentation()
        copy.DeepCopy(segmentation)
        if not copy.CreateRepresentation(BINARY_LABELMAP):
            raise InputError(f"Segment '{segment.GetName()}' cannot be converted to a binary labelmap.")
        ok = copy.GetSegment(segment_id) is not None
        if ok:
            shared = copy.GetSegment(segment_id).GetRepresentation(BINARY_LABELMAP)
            image.DeepCopy(shared)
            _keep_label(image, copy.GetSegment(segment_id).GetLabelValue())
    if not ok or image.GetPointData() is None or image.GetPointData().GetScalars() is None:
        raise InputError(f"Segment '{segment.GetName()}' is empty: draw the lesion in the Segment Editor first.")
    from vtk.util import numpy_support

    ext = image.GetExtent()
    dims = [ext[1] - ext[0] + 1, ext[3] - ext[2] + 1, ext[5] - ext[4] + 1]
    if min(dims) <= 0:
        raise InputError(f"Segment '{segment.GetName()}' is empty: draw the lesion in the Segment Editor first.")
    arr = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(dims[::-1]).T
    nz = [np.flatnonzero(arr.any(axis=tuple(a for a in range(3) if a != ax))) for ax in range(3)]
    if any(len(n) == 0 for n in nz):
        raise InputError(f"Segment '{segment.GetName()}' is empty: draw the lesion in the Segment Editor first.")
    lo = [int(n[0]) for n in nz]
    hi = [int(n[-1]) + 1 for n in nz]
    crop = (arr[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] != 0).astype(np.uint8)
    m = vtk.vtkMatrix4x4()
    image.GetImageToWorldMatrix(m)
    shift = np.eye(4)
    shift[:3, 3] = [ext[0] + lo[0], ext[2] + lo[1], ext[4] + lo[2]]
    return crop, matrix_to_numpy(m) @ shift


def _keep_label(image, label_value):
    from vtk.util import numpy_support

    a = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())
    a[:] = a == label_value
    image.Modified()


def segment_mask(volume_node, segmentation_node, segment_id) -> Volume:
    """The segment as a 0/1 `Volume` in the CT node's frame, on the segment's own grid.

    This is what the pipeline receives; it resamples it onto the CT grid (nearest neighbour, world
    coordinates, only inside the lesion's box), exactly as it does for a mask file on another grid.
    """
    arr, seg_ijk_to_ras = segment_labelmap(segmentation_node, segment_id)
    rel = relative_matrix(segmentation_node, volume_node)
    name = segmentation_node.GetSegmentation().GetSegment(segment_id).GetName()
    return Volume(arr, rel @ seg_ijk_to_ras, name, {"segment_id": segment_id})


def mask_hash(mask: Volume) -> str:
    """Content hash of a mask (voxels + geometry): detects edits even after a scene reload."""
    h = hashlib.sha256()
    a = np.ascontiguousarray(mask.array, dtype=np.uint8)
    h.update(repr(a.shape).encode())
    h.update(np.round(np.asarray(mask.ijk_to_ras, dtype=float), 6).tobytes())
    h.update(a.tobytes())
    return h.hexdigest()


def add_volume_node(volume: Volume, name, scene=None, labelmap=False, parent_transform=None):
    """A new volume node holding `volume` (for the audit cube), under the CT's parent transform."""
    scene = scene or slicer.mrmlScene
    cls = "vtkMRMLLabelMapVolumeNode" if labelmap else "vtkMRMLScalarVolumeNode"
    node = scene.AddNewNodeByClass(cls, scene.GenerateUniqueName(name))
    node.SetIJKToRASMatrix(numpy_to_matrix(volume.ijk_to_ras))
    slicer.util.updateVolumeFromArray(node, np.ascontiguousarray(np.asarray(volume.array).T))
    node.CreateDefaultDisplayNodes()
    if parent_transform is not None:
        node.SetAndObserveTransformNodeID(parent_transform.GetID())
    return node


def update_volume_node(node, volume: Volume, parent_transform=None):
    """Replace a volume node's voxels and geometry with `volume` (reused audit cube)."""
    node.SetIJKToRASMatrix(numpy_to_matrix(volume.ijk_to_ras))
    slicer.util.updateVolumeFromArray(node, np.ascontiguousarray(np.asarray(volume.array).T))
    if node.GetDisplayNode() is None:
        node.CreateDefaultDisplayNodes()
    node.SetAndObserveTransformNodeID(parent_transform.GetID() if parent_transform is not None else None)
    return node


def cube_roi(cube_to_ras, name, scene=None, parent_transform=None, size_mm=50.0, spacing_mm=1.0, roi=None):
    """A markups ROI outlining the 50 mm cube, oriented with the cube's axes (what the model saw);
    `roi` = an existing ROI node to move there instead of adding one."""
    scene = scene or slicer.mrmlScene
    c2r = np.asarray(cube_to_ras, dtype=float)
    n = size_mm / spacing_mm
    centre = c2r[:3, :3] @ np.full(3, (n - 1) / 2.0) + c2r[:3, 3]  # middle of the sample cells
    if roi is None:
        roi = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", scene.GenerateUniqueName(name))
    roi.SetLocked(False)
    axes = c2r[:3, :3] / np.linalg.norm(c2r[:3, :3], axis=0)
    obj = np.eye(4)
    obj[:3, :3] = axes
    obj[:3, 3] = centre
    roi.SetSize(size_mm, size_mm, size_mm)
    roi.SetAndObserveObjectToNodeMatrix(numpy_to_matrix(obj))
    roi.SetLocked(True)
    roi.SetAndObserveTransformNodeID(parent_transform.GetID() if parent_transform is not None else None)
    if roi.GetDisplayNode() is None:
        roi.CreateDefaultDisplayNodes()
    return roi
