"""slicer-core test setup: a real MRML scene and the module logics Logic uses, without slicer.app.

`fresh_scene()` sets `slicer.mrmlScene` and a small `slicer.modules` namespace (volumes, segmentations,
tables, transforms, markups) of real logics bound to that scene, which is what
`slicer.util` helpers call. Builders turn analytic `Volume`s into real nodes.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
import types

import numpy as np
import slicer
import vtk

from DFM50NLib.geometry.volume import Volume
from DFM50NLib.scene import mrml

_CACHE_DIR = None


def _cache_dir() -> str:
    """One remote-cache folder per test process, removed at exit (one per scene left hundreds in /tmp)."""
    global _CACHE_DIR
    if _CACHE_DIR is None:
        _CACHE_DIR = tempfile.mkdtemp(prefix="dfm50n-mrml-cache-")
        atexit.register(shutil.rmtree, _CACHE_DIR, ignore_errors=True)
    return _CACHE_DIR


def fresh_scene():
    scene = slicer.vtkMRMLScene()
    cache = slicer.vtkCacheManager()
    cache.SetRemoteCacheDirectory(_cache_dir())
    io = slicer.vtkDataIOManager()
    io.SetCacheManager(cache)
    scene.SetDataIOManager(io)
    scene.SetCacheManager(cache)
    selection = slicer.vtkMRMLSelectionNode()
    selection.SetSingletonTag("Singleton")  # markups logic looks for it
    scene.AddNode(selection)
    slicer.mrmlScene = scene
    logics = {}
    for name, cls in (
        ("volumes", slicer.vtkSlicerVolumesLogic),
        ("segmentations", slicer.vtkSlicerSegmentationsModuleLogic),
        ("tables", slicer.vtkSlicerTablesLogic),
        ("transforms", slicer.vtkSlicerTransformLogic),
        ("markups", slicer.vtkSlicerMarkupsLogic),
    ):
        logic = cls()
        logic.SetMRMLScene(scene)
        logics[name] = logic
    slicer.modules = types.SimpleNamespace(
        **{name: types.SimpleNamespace(logic=(lambda lg=lg: lg)) for name, lg in logics.items()}
    )
    return scene


def add_volume(vol: Volume, name="CT", scene=None):
    return mrml.add_volume_node(vol, name, scene or slicer.mrmlScene)


def oriented_image(array_ijk, ijk_to_ras):
    """vtkOrientedImageData (uint8) from an [i,j,k] array and its 4x4 matrix."""
    from vtk.util import numpy_support

    a = np.ascontiguousarray(np.asarray(array_ijk, dtype=np.uint8).T)  # [k,j,i]
    img = slicer.vtkOrientedImageData()
    img.SetDimensions(*np.asarray(array_ijk).shape)
    img.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
    numpy_support.vtk_to_numpy(img.GetPointData().GetScalars())[:] = a.ravel()
    img.SetImageToWorldMatrix(mrml.numpy_to_matrix(ijk_to_ras))
    img.Modified()
    return img


def add_segmentation(masks: dict, name="Segmentation", scene=None):
    """A segmentation node with one segment per {name: mask Volume}; returns (node, {name: id})."""
    scene = scene or slicer.mrmlScene
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
    node.CreateDefaultDisplayNodes()
    ids = {}
    for seg_name, vol in masks.items():
        ids[seg_name] = node.AddSegmentFromBinaryLabelmapRepresentation(
            oriented_image(vol.array, vol.ijk_to_ras), seg_name, [0.9, 0.2, 0.2]
        )
    return node, ids


def linear_transform(matrix, name="T", scene=None):
    scene = scene or slicer.mrmlScene
    node = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", name)
    node.SetMatrixTransformToParent(mrml.numpy_to_matrix(matrix))
    return node


def rotation(axis, degrees):
    t = np.deg2rad(degrees)
    c, s = np.cos(t), np.sin(t)
    i, j = [(1, 2), (0, 2), (0, 1)][axis]
    r = np.eye(3)
    r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
    return r


def node_count(scene):
    return scene.GetNumberOfNodes()
