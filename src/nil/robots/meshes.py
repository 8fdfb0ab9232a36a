"""Decimation of dense visual-only meshes: the CPU renderer's cost is triangles, physics must not change.

RobotSpec.load_model() (simplify_meshes=True) calls `simplify_visual_meshes` once per compiled MJCF.
"""

from __future__ import annotations

from nil.gl import ensure_offscreen_gl

ensure_offscreen_gl()  # MUJOCO_GL must be chosen before mujoco is first imported

import mujoco  # noqa: E402
import numpy as np  # noqa: E402

# Visual meshes above this many faces are decimated; the cell is this fraction of the model's extent
# (menagerie H1: ~7 mm, half a pixel at 224x224 with the default framing).
_MESH_FACE_BUDGET = 1000
_CELL_FRACTION = 1.0 / 250.0


def _cluster_decimate(v: np.ndarray, f: np.ndarray, cell: float) -> tuple[np.ndarray, np.ndarray]:
    """Vertex-clustering decimation: merge vertices per grid cell, drop collapsed and duplicate faces."""
    keys = np.floor(v / cell).astype(np.int64)
    _, inv = np.unique(keys, axis=0, return_inverse=True)
    inv = inv.reshape(-1)
    n = int(inv.max()) + 1
    sums = np.zeros((n, 3))
    np.add.at(sums, inv, v)
    newv = sums / np.bincount(inv, minlength=n)[:, None]
    nf = inv[f]
    keep = (nf[:, 0] != nf[:, 1]) & (nf[:, 1] != nf[:, 2]) & (nf[:, 0] != nf[:, 2])
    nf = nf[keep]
    _, first = np.unique(np.sort(nf, axis=1), axis=0, return_index=True)
    return newv, nf[np.sort(first)]


def simplify_visual_meshes(spec: mujoco.MjSpec, model: mujoco.MjModel) -> mujoco.MjModel:
    """Decimate dense meshes drawn by visual geoms (contype = conaffinity = 0), keeping physics identical.

    llvmpipe's cost is dominated by triangles (menagerie H1: 286k faces, drawn twice per frame); at the
    camera's resolution a cell of extent/250 is below a pixel. Collision geoms keep their exact meshes
    (a mesh shared with a collision geom is duplicated for the visual geoms), textured meshes are left
    alone, and the result is only used when every body's mass and inertia are unchanged.
    """
    visual = (model.geom_contype == 0) & (model.geom_conaffinity == 0)
    is_mesh = model.geom_type == mujoco.mjtGeom.mjGEOM_MESH
    used_by_collision = set(model.geom_dataid[is_mesh & ~visual].tolist())

    def textured(mid: int) -> bool:
        mats = model.geom_matid[(model.geom_dataid == mid) & is_mesh]
        return bool(
            model.mesh_texcoordnum[mid] > 0 and any((model.mat_texid[k] >= 0).any() for k in mats if k >= 0)
        )

    candidates = sorted(
        int(i)
        for i in set(model.geom_dataid[is_mesh & visual].tolist())
        if i >= 0 and model.mesh_facenum[i] > _MESH_FACE_BUDGET and not textured(int(i))
    )
    if not candidates:
        return model
    cell = float(max(model.stat.extent, 0.1)) * _CELL_FRACTION
    meshes = {m.name: m for m in spec.meshes}
    geoms_by_mesh: dict[str, list] = {}
    for g in spec.geoms:
        if g.type == mujoco.mjtGeom.mjGEOM_MESH and g.contype == 0 and g.conaffinity == 0:
            geoms_by_mesh.setdefault(g.meshname, []).append(g)
    try:
        for mid in candidates:
            name = mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_MESH, mid)
            if name not in meshes:
                continue
            va, nv = model.mesh_vertadr[mid], model.mesh_vertnum[mid]
            fa, nf = model.mesh_faceadr[mid], model.mesh_facenum[mid]
            v = model.mesh_vert[va : va + nv].astype(np.float64)
            f = model.mesh_face[fa : fa + nf]
            newv, newf = _cluster_decimate(v, f, cell)
            if len(newf) < 4 or len(newv) < 4 or len(newf) > 0.8 * nf:
                continue
            # back into the asset frame: compiled vertices are R(mesh_quat)^T (v_asset - mesh_pos)
            rot = np.zeros(9)
            mujoco.mju_quat2Mat(rot, model.mesh_quat[mid])
            v_asset = newv @ rot.reshape(3, 3).T + model.mesh_pos[mid]
            old = meshes[name]
            if mid in used_by_collision:
                # collision keeps the exact mesh; the visual geoms get a decimated copy
                new_name = f"{name}__nil_visual"
                for g in geoms_by_mesh.get(name, []):
                    g.meshname = new_name
                mesh = spec.add_mesh(name=new_name)
            else:
                # a fresh element: the old one keeps internal data (face normals) from its file
                inertia = old.inertia
                spec.delete(old)
                mesh = spec.add_mesh(name=name)
                mesh.inertia = inertia
            mesh.uservert = v_asset.reshape(-1).tolist()
            mesh.userface = newf.reshape(-1).astype(int).tolist()
        simple = spec.compile()
    except Exception:
        return model  # any trouble: keep the exact model
    same_physics = (
        simple.nbody == model.nbody
        and np.allclose(simple.body_mass, model.body_mass)
        and np.allclose(simple.body_inertia, model.body_inertia)
        and np.allclose(simple.body_ipos, model.body_ipos)
    )
    return simple if same_physics else model
