"""The package's boundaries, pinned: one module writes manifests, the index package owns FAISS and its
files, and nothing below the Gallery facade imports it."""

import ast
from pathlib import Path

import numpy as np

import gallery

PACKAGE = Path(gallery.__file__).parent
#: The layers above the facade: the package's front door, the command line and the web service.
ABOVE_THE_FACADE = {"gallery/__init__.py", "gallery/cli.py"}


def modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        yield path.relative_to(PACKAGE.parent).as_posix(), ast.parse(path.read_text(encoding="utf-8"))


def imported(name: str, tree: ast.AST) -> set[str]:
    """Absolute names of every module ``name`` (a path like gallery/store/x.py) imports, at any depth."""
    package = name[:-3].replace("/", ".").removesuffix(".__init__")
    if not name.endswith("__init__.py"):
        package = package.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            out.add(base)
            out |= {f"{base}.{a.name}" for a in node.names}
    return out


def functions(tree: ast.Module) -> set[str]:
    """Names of the module-level functions of ``tree``."""
    return {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}


def calls(tree: ast.AST, name: str) -> int:
    return sum(1 for n in ast.walk(tree) if isinstance(n, ast.Call)
               and (getattr(n.func, "id", None) == name or getattr(n.func, "attr", None) == name))


def test_only_the_change_transaction_writes_a_manifest():
    writers = {name for name, tree in modules() if calls(tree, "write_manifest")}
    assert writers == {"gallery/store/change.py"}


def test_nothing_below_the_facade_imports_it():
    importers = {name for name, tree in modules() if "gallery.gallery" in imported(name, tree)}
    assert importers - ABOVE_THE_FACADE - {n for n in importers if n.startswith("gallery/serve/")} == set()


def test_only_the_index_package_touches_faiss_and_index_files():
    index_io = {"save_index", "load_index", "trained_index", "index_name", "add_vectors", "spec_of"}
    for name, tree in modules():
        if name.startswith("gallery/index/"):
            continue
        assert "faiss" not in imported(name, tree), name
        assert not functions(tree) & index_io, name
    assert index_io <= functions(dict(modules())["gallery/index/files.py"])


def test_the_ray_engine_plugs_in_as_a_searcher_factory_not_a_subclass():
    tree = dict(modules())["gallery/distributed/sharded.py"]
    bases = {b.id for n in ast.walk(tree) if isinstance(n, ast.ClassDef) for b in n.bases if isinstance(b, ast.Name)}
    assert "Gallery" not in bases


def _modules_loaded_by(code: str) -> set[str]:
    """Top-level packages a fresh interpreter has imported after running ``code``."""
    import subprocess
    import sys

    probe = f"{code}\nimport sys\nprint(' '.join(sorted({{m.split('.')[0] for m in sys.modules}})))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=PACKAGE.parent)
    return set(out.stdout.split())


ENGINES = {"torch", "faiss", "pyarrow", "h5py", "dlib", "matplotlib", "sklearn", "ray", "fastapi"}


def test_gallery_help_loads_no_engine():
    code = "from gallery.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass"
    assert _modules_loaded_by(code) & ENGINES == set()


def test_describing_a_gallery_loads_no_torch(tmp_path):
    """``gallery info`` reads the manifest, the index and the shards; torch (3 s to import) is for search and encoding."""
    from gallery import Gallery

    Gallery.from_vectors(np.eye(4, dtype=np.float32), list("aabb"), tmp_path / "g", progress=False)
    code = f"from gallery.cli import main\ntry:\n    main(['info', '-g', {str(tmp_path / 'g')!r}])\nexcept SystemExit:\n    pass"
    loaded = _modules_loaded_by(code)
    assert "faiss" in loaded and "torch" not in loaded


def test_a_detection_worker_loads_dlib_but_no_torch_or_storage():
    loaded = _modules_loaded_by("from gallery.embed.pipeline import align_batch\nfrom gallery.embed import FaceDetector\nFaceDetector()")
    assert "dlib" in loaded
    assert loaded & ENGINES == {"dlib"}


def test_the_command_lines_copy_of_the_evidence_rule_is_the_metrics_own():
    from gallery.cli import MIN_FALSE_ACCEPTS
    from gallery.metrics.identification import MIN_FALSE_ACCEPTS as rule

    assert MIN_FALSE_ACCEPTS == rule
