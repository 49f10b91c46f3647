"""Neuroglancer links and source strings (formats.md §4, webknossos.md §2 "Neuroglancer URIs")."""

from __future__ import annotations

import contextlib
import json
import string
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from wkjupyter.errors import MetadataError, UnsupportedFormatError
from wkjupyter.sources.neuroglancer import (
    NeuroglancerLayer,
    SourceSpec,
    is_neuroglancer_url,
    parse_neuroglancer_url,
    split_source,
)

HOST = "https://neuroglancer-demo.appspot.com/"
# The neuroglancer python client (python/neuroglancer/url_state.py to_url_fragment).
PY_SAFE = "~@#$&()*!+=:;,.?/'"
DIMENSIONS = {"x": [4e-9, "m"], "y": [4e-9, "m"], "z": [4e-8, "m"]}
SHADER = "#uicontrol invlerp normalized\nvoid main() { emitGrayscale(normalized()); }\n"


def compact(state: object) -> str:
    return json.dumps(state, separators=(",", ":"))


def python_client_url(state: object) -> str:
    return f"{HOST}#!{quote(compact(state), safe=PY_SAFE)}"


def url_safe_stringify(value: object) -> str:
    """Port of neuroglancer src/util/json.ts urlSafeStringify."""
    if isinstance(value, dict):
        items = (f"{url_safe_string(k)}:{url_safe_stringify(v)}" for k, v in value.items())
        return "{" + "_".join(items) + "}"
    if isinstance(value, list):
        return "[" + "_".join(url_safe_stringify(v) for v in value) + "]"
    if isinstance(value, str):
        return url_safe_string(value)
    return json.dumps(value)


def url_safe_string(text: str) -> str:
    swap = str.maketrans({"'": '"', '"': "'"})
    return json.dumps(text.translate(swap), ensure_ascii=False).translate(swap)


def encode(state: object, encoding: str, *, incremental: bool = False) -> str:
    plus = "+" if incremental else ""
    text = compact(state)
    if encoding == "python":
        return f"{HOST}#!{quote(plus + text, safe=PY_SAFE)}"
    if encoding == "plain":
        return f"{HOST}#!{plus}{text}"
    if encoding == "double":
        return f"{HOST}#!{quote(quote(plus + text, safe=PY_SAFE), safe=PY_SAFE)}"
    assert encoding == "urlsafe"
    return f"{HOST}#!{quote(plus + url_safe_stringify(state), safe=PY_SAFE)}"


def state_with(layers: object) -> dict[str, Any]:
    return {
        "dimensions": DIMENSIONS,
        "position": [1024.5, 2048.5, 100.5],
        "crossSectionScale": 1.0,
        "projectionScale": 4096,
        "layers": layers,
        "layout": "4panel",
    }


# ---------------------------------------------------------------------------------------------
# split_source


H01 = "gs://h01-release/data/20210601/4nm_raw"
IDR = "https://uk1s3.embassy.ebi.ac.uk/idr/zarr/v0.4/idr0062A/6001240.zarr"
COSEM = "s3://janelia-cosem-datasets/jrc_hela-2/jrc_hela-2.zarr"
MINIO = "minio.example.org:9000/bucket/key.zarr"


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        # legacy prefixes
        (f"precomputed://{H01}", (H01, "precomputed", "")),
        (f"zarr://{IDR}", (IDR, "zarr", "")),
        (
            f"zarr2://{COSEM}/recon-1/em/fibsem-uint8",
            (f"{COSEM}/recon-1/em/fibsem-uint8", "zarr2", ""),
        ),
        ("zarr3://https://h.org/a.zarr/", ("https://h.org/a.zarr/", "zarr3", "")),
        (
            "n5://s3://janelia-cosem/hela.n5/em/fibsem",
            ("s3://janelia-cosem/hela.n5/em/fibsem", "n5", ""),
        ),
        ("PRECOMPUTED://gs://b/p", ("gs://b/p", "precomputed", "")),
        ("zarr2://gs://b/p.zarr#dimension_separator=/", ("gs://b/p.zarr", "zarr2", "")),
        ("precomputed:///data/local/vol", ("/data/local/vol", "precomputed", "")),
        # pipeline drivers
        ("gs://bucket/path/|zarr2:", ("gs://bucket/path/", "zarr2", "")),
        ("s3://b/p|zarr3:", ("s3://b/p", "zarr3", "")),
        ("https://h.org/p|zarr:", ("https://h.org/p", "zarr", "")),
        ("gs://b/c.n5/|n5:", ("gs://b/c.n5/", "n5", "")),
        ("gs://b/seg/|neuroglancer-precomputed:", ("gs://b/seg/", "precomputed", "")),
        ("gs://b/root.zarr/|zarr2:labels/cells/", ("gs://b/root.zarr/", "zarr2", "labels/cells/")),
        ("gs://b/p/|zarr2:#dimension_separator=/", ("gs://b/p/", "zarr2", "")),
        ("gs://b/p/|zarr:0/#dimension_separator=.", ("gs://b/p/", "zarr", "0/")),
        ("file:///x/|zarr3:", ("file:///x/", "zarr3", "")),
        ("zarr3://gs://b/p/|zarr3:", ("gs://b/p/", "zarr3", "")),
        # kvstores
        (f"s3+https://{MINIO}", (f"https://{MINIO}", None, "")),
        (
            "s3+http://localhost:9000/bucket/key|zarr2:",
            ("http://localhost:9000/bucket/key", "zarr2", ""),
        ),
        ("gs+xml://b/p/|zarr3:", ("gs://b/p/", "zarr3", "")),
        ("file:///data/x.zarr", ("file:///data/x.zarr", None, "")),
        ("/data/x.zarr", ("/data/x.zarr", None, "")),
        ("relative/x.n5", ("relative/x.n5", None, "")),
        ("C:\\data\\x.zarr", ("C:\\data\\x.zarr", None, "")),
        ("  gs://b/p  ", ("gs://b/p", None, "")),
    ],
)
def test_split_source(source: str, expected: tuple[str, str | None, str]) -> None:
    assert split_source(source) == SourceSpec(*expected)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "source",
    [
        "gs://b/a.zip|zip:inner/|zarr3:",
        "gs://b/a.zip|zip:",
        "gs://b/db|ocdbt:",
        "gs://b/x|gzip:",
        "gs://b/x|zarr4:",
        "gs://b/x|zarr2",
        "python://http://127.0.0.1:8080/volume",
        "boss://https://api.bossdb.io/coll/exp/chan",
        "graphene://https://minnie.microns-daf.com/segmentation/table/minnie65_public",
        "nifti://https://h.org/brain.nii.gz",
        "ftp://h.org/x",
        "gs://b/x|zarr2:|zarr3:",
    ],
)
def test_split_source_unsupported(source: str) -> None:
    with pytest.raises(UnsupportedFormatError, match="neuroglancer-precomputed") as info:
        split_source(source)
    assert repr(source) in str(info.value)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    "source",
    [
        "",
        "   ",
        "zarr://",
        "|zarr2:",
        "zarr2://gs://b/p|zarr3:",
        "gs://b/p|zarr3:#dimension_separator=/",
    ],
)
def test_split_source_malformed(source: str) -> None:
    with pytest.raises(MetadataError):
        split_source(source)


# ---------------------------------------------------------------------------------------------
# is_neuroglancer_url


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (python_client_url(state_with([])), True),
        (f"{HOST}#!{compact(state_with([]))}", True),
        (f"{HOST}#!{quote(quote(compact(state_with([]))))}", True),
        (f"{HOST}#!+{{'layers':[]}}", True),
        (f"{HOST}#!%2B%7B%7D", True),
        ("http://localhost:8080/v/1/#!{}", True),
        ("https://neuroglancer.janelia.org/#!gs://bucket/states/view.json", True),
        (
            "https://spelunker.cave-explorer.org/"
            "#!middleauth+https://global.daf-apis.com/nglstate/api/v1/1",
            True,
        ),
        (f"{HOST}", False),
        (f"{HOST}#!", False),
        (f"{HOST}#section", False),
        ("gs://bucket/x.zarr", False),
        ("file:///x#!{}", False),
        ("https://h.org/x.zarr", False),
    ],
)
def test_is_neuroglancer_url(url: str, expected: bool) -> None:
    assert is_neuroglancer_url(url) is expected


# ---------------------------------------------------------------------------------------------
# parse_neuroglancer_url: examples


def h01_state() -> dict[str, Any]:
    return state_with(
        [
            {
                "type": "image",
                "source": "precomputed://gs://h01-release/data/20210601/4nm_raw",
                "tab": "source",
                "shader": SHADER,
                "name": "4nm EM",
            },
            {
                "type": "segmentation",
                "source": "precomputed://gs://h01-release/data/20210601/c3",
                "selectedAlpha": 0.3,
                "segments": ["5292458209"],
                "name": "c3 segmentation",
            },
        ]
    )


H01_LAYERS = [
    NeuroglancerLayer(
        "4nm EM", "color", (SourceSpec("gs://h01-release/data/20210601/4nm_raw", "precomputed"),)
    ),
    NeuroglancerLayer(
        "c3 segmentation",
        "segmentation",
        (SourceSpec("gs://h01-release/data/20210601/c3", "precomputed"),),
    ),
]


@pytest.mark.parametrize("encoding", ["python", "plain", "double", "urlsafe"])
def test_parse_encodings(encoding: str) -> None:
    url = encode(h01_state(), encoding)
    assert parse_neuroglancer_url(url) == (H01_LAYERS, [])


def test_python_client_url_keeps_raw_hash_of_shader() -> None:
    url = python_client_url(h01_state())
    assert url.count("#") > 1  # "#uicontrol" stays raw in the fragment
    assert parse_neuroglancer_url(url)[0] == H01_LAYERS


def test_browser_encoded_url() -> None:
    # Neuroglancer's own encodeFragment (src/ui/url_hash_binding.ts): encodeURI, then !'()*;,
    text = compact(h01_state())
    encoded = quote(text, safe="/?:@&=+$#")
    assert encoded.startswith("%7B%22")
    assert parse_neuroglancer_url(f"{HOST}#!{encoded}")[0] == H01_LAYERS


def test_raw_hash_and_bang_inside_state() -> None:
    state = state_with(
        [{"type": "image", "source": "zarr://https://h.org/#!x.zarr", "name": "a#!b"}]
    )
    url = f"{HOST}#!{compact(state)}"
    layers, _ = parse_neuroglancer_url(url)
    assert layers == [
        NeuroglancerLayer("a#!b", "color", (SourceSpec("https://h.org/#!x.zarr", "zarr"),))
    ]


def test_url_safe_form_typed_by_hand() -> None:
    url = (
        f"{HOST}#!{{'layers':[{{'name':'em_raw'_'type':'image'_"
        "'source':'zarr://https://h.org/data_1.zarr'}_"
        "{'name':'it\\'s \"seg\"'_'type':'segmentation'_'source':'gs://b/seg_v2/|zarr3:'}]}"
    )
    layers, notes = parse_neuroglancer_url(url)
    assert notes == []
    assert layers == [
        NeuroglancerLayer("em_raw", "color", (SourceSpec("https://h.org/data_1.zarr", "zarr"),)),
        NeuroglancerLayer('it\'s "seg"', "segmentation", (SourceSpec("gs://b/seg_v2/", "zarr3"),)),
    ]


def test_incremental_state() -> None:
    state = {"layers": [{"name": "em", "source": "gs://b/em/|zarr2:"}]}
    for encoding in ("python", "plain", "double", "urlsafe"):
        layers, notes = parse_neuroglancer_url(encode(state, encoding, incremental=True))
        assert layers == [NeuroglancerLayer("em", None, (SourceSpec("gs://b/em/", "zarr2"),))]
        assert any("incremental" in note for note in notes)


def test_legacy_dict_layers() -> None:
    state = state_with(
        {
            "image": "precomputed://gs://neuroglancer-public-data/flyem_fib-25/image",
            "ground_truth": {
                "type": "segmentation",
                "source": "precomputed://gs://neuroglancer-public-data/flyem_fib-25/ground_truth",
            },
            "notes": {"type": "annotation", "source": "local://annotations"},
        }
    )
    layers, notes = parse_neuroglancer_url(python_client_url(state))
    assert layers == [
        NeuroglancerLayer(
            "image",
            None,
            (SourceSpec("gs://neuroglancer-public-data/flyem_fib-25/image", "precomputed"),),
        ),
        NeuroglancerLayer(
            "ground_truth",
            "segmentation",
            (SourceSpec("gs://neuroglancer-public-data/flyem_fib-25/ground_truth", "precomputed"),),
        ),
    ]
    assert notes == ["layer 'notes' of type 'annotation' has no volume to import; skipped"]


def test_object_and_list_sources() -> None:
    transform = {
        "outputDimensions": DIMENSIONS,
        "matrix": [[1, 0, 0, 10], [0, 1, 0, 0], [0, 0, 1, 0]],
    }
    state = state_with(
        [
            {
                "type": "image",
                "name": "fibsem",
                "source": {
                    "url": f"{COSEM}/|zarr2:recon-1/em/fibsem-uint8/",
                    "transform": transform,
                    "subsources": {"default": True},
                    "enableDefaultSubsources": False,
                },
            },
            {
                "type": "segmentation",
                "name": "cells",
                "source": [
                    "precomputed://gs://b/cells",
                    {"url": "precomputed://gs://b/cells/mesh", "subsources": {"mesh": True}},
                    {"url": "local://annotations"},
                ],
            },
        ]
    )
    layers, notes = parse_neuroglancer_url(python_client_url(state))
    assert layers == [
        NeuroglancerLayer(
            "fibsem",
            "color",
            (SourceSpec(f"{COSEM}/", "zarr2", "recon-1/em/fibsem-uint8/"),),
        ),
        NeuroglancerLayer(
            "cells",
            "segmentation",
            (
                SourceSpec("gs://b/cells", "precomputed"),
                SourceSpec("gs://b/cells/mesh", "precomputed"),
            ),
        ),
    ]
    assert len(notes) == 2
    assert "transform" in notes[0]
    assert "fibsem" in notes[0]
    assert "local://annotations" in notes[1]


def test_skipped_layers_are_noted() -> None:
    state = state_with(
        [
            {"type": "annotation", "name": "points", "source": "local://annotations"},
            {"type": "mesh", "name": "m", "source": "obj://https://h.org/m.obj"},
            {"type": "single_mesh", "name": "sm", "source": "vtk://https://h.org/m.vtk"},
            {"type": "image", "name": "empty"},
            {"name": "local", "source": "local://annotations"},
            {"type": "segmentation", "name": "graph", "source": "graphene://https://h.org/seg"},
            {"type": "image", "name": "zipped", "source": ["gs://b/a.zip|zip:", "gs://b/ok/|n5:"]},
            {"source": "gs://b/nameless"},
            "not a layer",
        ]
    )
    layers, notes = parse_neuroglancer_url(python_client_url(state))
    assert layers == [NeuroglancerLayer("zipped", "color", (SourceSpec("gs://b/ok/", "n5"),))]
    assert notes[:3] == [
        "layer 'points' of type 'annotation' has no volume to import; skipped",
        "layer 'm' of type 'mesh' has no volume to import; skipped",
        "layer 'sm' of type 'single_mesh' has no volume to import; skipped",
    ]
    rest = "\n".join(notes[3:])
    for expected in (
        "layer 'empty' has no source; skipped",
        "layer 'local' has no source wkjupyter can read; skipped",
        "graphene://",
        "layer 'graph' has no source wkjupyter can read; skipped",
        "'|zip:'",
        "layer #7 has no name",
        "layer #8 has no name",
    ):
        assert expected in rest


@pytest.mark.parametrize("layers", [[], {}, None])
def test_no_layers(layers: object) -> None:
    state = state_with(layers) if layers is not None else {"dimensions": DIMENSIONS}
    found, notes = parse_neuroglancer_url(python_client_url(state))
    assert found == []
    assert notes == ["the Neuroglancer state has no layers"]


def test_layer_names_kept_exactly() -> None:
    names = [" padded ", "Ünïcødé 層", "a_b,c", "quote'\"", "tab\tnewline\n", ""]
    state = state_with([{"name": n, "type": "image", "source": "gs://b/p"} for n in names])
    for encoding in ("python", "plain", "double", "urlsafe"):
        layers, _ = parse_neuroglancer_url(encode(state, encoding))
        assert [layer.name for layer in layers] == names


@pytest.mark.parametrize(
    "url",
    [
        f"{HOST}#!%7B%22layers%22:%5B%7B%22name%22:%22em%22",  # cut short
        f'{HOST}#!{{"layers":[{{"name":"em",}}]}}',
        f'{HOST}#!{{"layers":[]}})',  # markdown link junk
        f"{HOST}#!%7Bbogus%7D",
    ],
)
def test_malformed_state(url: str) -> None:
    with pytest.raises(
        MetadataError, match="copy the URL again from Neuroglancer's address bar"
    ) as info:
        parse_neuroglancer_url(url)
    assert "at character" in str(info.value)
    assert ">>>" in str(info.value)


@pytest.mark.parametrize(
    "url",
    [f"{HOST}#![1,2]", f"{HOST}#!%22text%22", f'{HOST}#!{{"layers":5}}', HOST, f"{HOST}#!"],
)
def test_not_a_state_object(url: str) -> None:
    with pytest.raises(MetadataError, match="copy the URL again"):
        parse_neuroglancer_url(url)


@pytest.mark.parametrize(
    "url",
    [
        "https://neuroglancer.janelia.org/#!gs://bucket/states/view.json",
        "https://neuroglancer.janelia.org/#!https%3A%2F%2Fh.org%2Fstate.json",
    ],
)
def test_remote_state(url: str) -> None:
    with pytest.raises(UnsupportedFormatError, match="download that JSON"):
        parse_neuroglancer_url(url)


# ---------------------------------------------------------------------------------------------
# Properties

SEGMENT = st.text(string.ascii_letters + string.digits + "-._~", min_size=1, max_size=10)
BUCKET = st.from_regex(r"[a-z0-9][a-z0-9-]{2,20}", fullmatch=True)
HOSTNAME = st.from_regex(r"[a-z][a-z0-9-]{0,10}(\.[a-z]{2,5}){1,2}(:[1-9]\d{1,4})?", fullmatch=True)
LEGACY = ["precomputed", "zarr", "zarr2", "zarr3", "n5"]
DRIVERS = {
    "zarr": "zarr",
    "zarr2": "zarr2",
    "zarr3": "zarr3",
    "n5": "n5",
    "neuroglancer-precomputed": "precomputed",
}


@st.composite
def kvstores(draw: st.DrawFn) -> tuple[str, str]:
    """A storage URL as written in a state, and the URL split_source should return."""
    path = "/".join(draw(st.lists(SEGMENT, max_size=4)))
    path += "/" if path and draw(st.booleans()) else ""
    kind = draw(st.sampled_from(["gs", "s3", "https", "http", "s3+https", "file", "local"]))
    if kind in ("gs", "s3"):
        url = f"{kind}://{draw(BUCKET)}/{path}"
        return url, url
    if kind in ("https", "http"):
        url = f"{kind}://{draw(HOSTNAME)}/{path}"
        return url, url
    if kind == "s3+https":
        rest = f"{draw(HOSTNAME)}/{draw(BUCKET)}/{path}"
        return f"s3+https://{rest}", f"https://{rest}"
    if kind == "file":
        url = f"file:///{draw(BUCKET)}/{path}"
        return url, url
    url = f"/{draw(BUCKET)}/{path}"
    return url, url


@st.composite
def sources(draw: st.DrawFn) -> tuple[str, SourceSpec]:
    written, url = draw(kvstores())
    style = draw(st.sampled_from(["legacy", "pipe", "none"]))
    if style == "legacy":
        fmt = draw(st.sampled_from(LEGACY))
        return f"{fmt}://{written}", SourceSpec(url, fmt)  # type: ignore[arg-type]
    if style == "pipe":
        driver = draw(st.sampled_from(sorted(DRIVERS)))
        subpath = "/".join(draw(st.lists(SEGMENT, max_size=3)))
        fragment = ""
        if driver in ("zarr", "zarr2") and draw(st.booleans()):
            fragment = draw(st.sampled_from(["#dimension_separator=/", "#dimension_separator=."]))
        spec = SourceSpec(url, DRIVERS[driver], subpath)  # type: ignore[arg-type]
        return f"{written}|{driver}:{subpath}{fragment}", spec
    return written, SourceSpec(url, None)


@st.composite
def volume_layers(draw: st.DrawFn) -> tuple[dict[str, Any], NeuroglancerLayer]:
    name = draw(st.text(max_size=20))
    kind = draw(st.sampled_from(["image", "segmentation", None]))
    pairs = draw(st.lists(sources(), min_size=1, max_size=3))
    wrapped = [p[0] if draw(st.booleans()) else {"url": p[0]} for p in pairs]
    source: object = wrapped if len(wrapped) > 1 or draw(st.booleans()) else wrapped[0]
    spec: dict[str, Any] = {"name": name, "source": source}
    if kind is not None:
        spec["type"] = kind
    if draw(st.booleans()):
        spec["shader"] = draw(st.text(max_size=30))
    category = {"image": "color", "segmentation": "segmentation", None: None}[kind]
    layer = NeuroglancerLayer(name, category, tuple(p[1] for p in pairs))  # type: ignore[arg-type]
    return spec, layer


ANNOTATION_LAYER = {"type": "annotation", "source": "local://annotations", "annotations": []}


@given(
    entries=st.lists(
        st.one_of(volume_layers(), st.text(max_size=10).map(lambda n: (ANNOTATION_LAYER, n))),
        max_size=5,
    ),
    legacy_dict=st.booleans(),
    encoding=st.sampled_from(["python", "plain", "double", "urlsafe"]),
    incremental=st.booleans(),
)
def test_roundtrip(
    entries: list[tuple[dict[str, Any], NeuroglancerLayer | str]],
    legacy_dict: bool,
    encoding: str,
    incremental: bool,
) -> None:
    specs: list[dict[str, Any]] = []
    expected: list[NeuroglancerLayer] = []
    for spec, layer in entries:
        if isinstance(layer, str):  # an annotation layer named `layer`
            specs.append({**spec, "name": layer})
        else:
            specs.append(spec)
            expected.append(layer)
    names = [spec["name"] for spec in specs]
    if legacy_dict:
        assume(len(set(names)) == len(names))
        layers: object = {s["name"]: {k: v for k, v in s.items() if k != "name"} for s in specs}
    else:
        layers = specs
    state = state_with(layers)
    # A plain (unencoded) state is percent-decoded like any other, as Neuroglancer does.
    assume(encoding != "plain" or "%" not in compact(state))
    found, notes = parse_neuroglancer_url(encode(state, encoding, incremental=incremental))
    assert found == expected
    skipped = len(specs) - len(expected)
    assert sum("has no volume to import" in note for note in notes) == skipped
    if not specs:
        assert "the Neuroglancer state has no layers" in notes


@given(sources())
def test_split_source_idempotent_on_url(pair: tuple[str, SourceSpec]) -> None:
    written, expected = pair
    spec = split_source(written)
    assert spec == expected
    assert split_source(spec.url) == SourceSpec(spec.url, None)


@given(st.text(max_size=200))
def test_arbitrary_text_fails_cleanly(text: str) -> None:
    url = f"{HOST}#!{text}"
    assert isinstance(is_neuroglancer_url(url), bool)
    with contextlib.suppress(MetadataError, UnsupportedFormatError):
        parse_neuroglancer_url(url)
