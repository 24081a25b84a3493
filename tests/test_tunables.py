"""Tunables and the kernel cache's key."""

from numrnn import tunables


def test_cache_folder_is_keyed_by_version_and_kernel_sources(monkeypatch, tmp_path):
    monkeypatch.setenv("NUMRNN_CACHE_DIR", str(tmp_path))
    folder = tunables.kernel_cache_dir()
    assert folder.parent == tmp_path
    assert folder.name == f"kernels-{tunables.__version__}-{tunables.kernel_source_hash()}"


def test_kernels_compiled_looks_for_the_cache_index(monkeypatch, tmp_path):
    monkeypatch.setenv("NUMRNN_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("NUMRNN_CACHE", "1")
    assert not tunables.kernels_compiled("generate_tokens")
    index = tunables.kernel_cache_dir() / "kernels_abc"
    index.mkdir(parents=True)
    (index / "cpu.generate_tokens-682.py311.nbi").write_bytes(b"")
    assert tunables.kernels_compiled("generate_tokens")
    assert not tunables.kernels_compiled("generate_tokens", "lstm_forward")
    monkeypatch.setenv("NUMRNN_CACHE", "0")
    assert not tunables.kernels_compiled("generate_tokens")
