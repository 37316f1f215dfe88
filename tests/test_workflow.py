"""core/workflow.py: API-format loading, node lookup, and prompts per frame, batch and sequence."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from comfy_cluster.core.errors import WorkflowError
from comfy_cluster.core.frames import FixedChunker, FrameRange
from comfy_cluster.core.workflow import (
    Override,
    Workflow,
    WorkflowTargets,
    build_batch_prompt,
    build_frame_prompt,
    build_sequence_prompt,
    expand_frame_tokens,
    map_batch_outputs,
    missing_classes,
    validate_workflow,
)

FIXTURES = Path(__file__).parent / "fixtures" / "workflows"
OBJECT_INFO = Path(__file__).parent / "fixtures" / "object_info_subset.json"


def load(name: str) -> Workflow:
    return Workflow.load(FIXTURES / name)


def raw(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text())


def assert_valid_graph(prompt: dict[str, Any]) -> None:
    """Every link names an existing node; the prompt still loads as API format."""
    for node_id, node in prompt.items():
        for name, value in node["inputs"].items():
            if isinstance(value, list):
                assert len(value) == 2, (node_id, name)
                assert value[0] in prompt, (node_id, name, value)
    Workflow.load(prompt)


# ---------------------------------------------------------------------------------------------
# Loading


@pytest.mark.parametrize(
    "name", ["invert.json", "empty_invert.json", "batch_temporal.json", "txt2img_braces.json"]
)
def test_fixtures_load_and_have_one_output(name: str) -> None:
    wf = load(name)
    assert wf.source.endswith(name)
    assert wf.output_node() in wf
    assert json.loads(json.dumps(wf.to_dict())) == raw(name)


def test_load_accepts_dict_path_str_and_workflow() -> None:
    data = raw("invert.json")
    from_dict = Workflow.load(data)
    assert from_dict.source == "<dict>"
    assert from_dict.nodes == Workflow.load(str(FIXTURES / "invert.json")).nodes
    assert Workflow.load(from_dict) is from_dict


def test_load_copies_the_callers_dict() -> None:
    data = raw("invert.json")
    wf = Workflow.load(data)
    data["2"]["inputs"]["image"] = ["1", 1]
    data["9"] = {"class_type": "X", "inputs": {}}
    assert wf.nodes["2"]["inputs"]["image"] == ["1", 0]
    assert "9" not in wf
    with pytest.raises(TypeError):
        wf.nodes["9"] = {}  # type: ignore[index]


def test_ui_format_is_refused_with_export_api_hint() -> None:
    with pytest.raises(WorkflowError, match=r"Export \(API\)") as info:
        load("ui_format.json")
    assert "ui_format.json" in str(info.value)
    # recognised as a UI export as a whole, not blamed on a node called "nodes"
    assert "is a ComfyUI UI workflow" in str(info.value)
    assert info.value.node_id is None


@pytest.mark.parametrize("node_id", ["nodes", "links"])
def test_an_api_node_named_nodes_or_links_is_not_a_ui_workflow(node_id: str) -> None:
    """Only both keys together mark a UI export; one node id may be any string."""
    data = raw("invert.json")
    data[node_id] = data.pop("2")
    data["3"]["inputs"]["images"] = [node_id, 0]
    assert Workflow.load(data).output_node() == "3"


def test_json_syntax_error_names_file_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{\n  "1": {"class_type": "LoadImage",\n    "inputs": {,}\n  }\n}\n')
    with pytest.raises(WorkflowError) as info:
        Workflow.load(path)
    message = str(info.value)
    assert str(path) in message
    assert "line 3, column 16" in message


def test_missing_file_is_a_workflow_error(tmp_path: Path) -> None:
    with pytest.raises(WorkflowError, match="cannot read workflow"):
        Workflow.load(tmp_path / "nope.json")


@pytest.mark.parametrize(
    ("data", "match", "node_id"),
    [
        ([], "JSON object", None),
        ({}, "no nodes", None),
        ({"prompt": {"1": {"class_type": "X", "inputs": {}}}}, "request body", None),
        ({"1": {"inputs": {}}}, "node 1 has no class_type", "1"),
        ({"1": "LoadImage"}, "node 1 has no class_type", "1"),
        ({"1": {"class_type": "", "inputs": {}}}, "empty class_type", "1"),
        ({"1": {"class_type": "X"}}, r"node 1 \(X\) has no 'inputs'", "1"),
        ({"1": {"class_type": "X", "inputs": {"a": ["2", 0]}}}, "missing node 2", "1"),
        ({"1": {"class_type": "X", "inputs": {"a": [1, 2, 3]}}}, "not a link", "1"),
        ({"1": {"class_type": "X", "inputs": {"a": ["1", "0"]}}}, "not a link", "1"),
        # bool is an int subclass, but True is not an output index: a typo, never output 1
        ({"1": {"class_type": "X", "inputs": {"a": ["1", True]}}}, "not a link", "1"),
        ({"1": {"class_type": "X", "inputs": {"a": ["1", False]}}}, "not a link", "1"),
        ({"1": {"class_type": "X", "inputs": {"a": ["1"]}}}, "not a link", "1"),
    ],
)
def test_malformed_api_workflows(data: Any, match: str, node_id: str | None) -> None:
    with pytest.raises(WorkflowError, match=match) as info:
        Workflow.load(data)
    assert info.value.node_id == node_id


def test_classes_and_missing_classes() -> None:
    wf = load("txt2img_braces.json")
    assert wf.classes() == {
        "CheckpointLoaderSimple",
        "EmptyLatentImage",
        "CLIPTextEncode",
        "KSampler",
        "VAEDecode",
        "SaveImage",
    }
    object_info = json.loads(OBJECT_INFO.read_text())
    assert missing_classes(wf, object_info) == []
    assert missing_classes(load("sequence_vhs.json"), object_info) == ["VHS_LoadImagesPath"]
    assert missing_classes(load("invert.json"), ["SaveImage"]) == ["ImageInvert", "LoadImage"]


# ---------------------------------------------------------------------------------------------
# Node lookup


def test_resolve_by_id_or_unique_title() -> None:
    wf = load("invert.json")
    assert wf.resolve("3") == "3"
    assert wf.resolve(3) == "3"
    assert wf.resolve("Save Image") == "3"
    assert wf.resolve("Plate") == "1"


def test_resolve_unknown_lists_titles() -> None:
    with pytest.raises(WorkflowError, match=r"no node with id or title 'Nope'.*Plate"):
        load("invert.json").resolve("Nope")


def test_resolve_ambiguous_title_lists_ids() -> None:
    data = raw("invert.json")
    data["2"]["_meta"]["title"] = "Same"
    data["3"]["_meta"]["title"] = "Same"
    with pytest.raises(WorkflowError, match="ambiguous: nodes 2, 3"):
        Workflow.load(data).resolve("Same")


def test_id_wins_over_a_title_equal_to_another_id() -> None:
    data = raw("invert.json")
    data["3"]["_meta"]["title"] = "1"
    assert Workflow.load(data).resolve("1") == "1"


def test_output_node_detection() -> None:
    assert load("invert.json").output_node() == "3"
    data = raw("invert.json")
    data["3"]["class_type"] = "PreviewImage"
    del data["3"]["inputs"]["filename_prefix"]
    assert Workflow.load(data).output_node() == "3"
    data["3"] = {
        "class_type": "SaveAnimatedWEBP",
        "inputs": {"images": ["2", 0], "filename_prefix": "x"},
    }
    assert Workflow.load(data).output_node() == "3"


def test_save_image_websocket_is_not_a_file_output() -> None:
    data = raw("invert.json")
    data["3"] = {"class_type": "SaveImageWebsocket", "inputs": {"images": ["2", 0]}}
    with pytest.raises(WorkflowError, match="no image output node"):
        Workflow.load(data).output_node()


def test_several_outputs_need_a_name_and_the_error_lists_them() -> None:
    data = raw("invert.json")
    data["4"] = {
        "class_type": "PreviewImage",
        "inputs": {"images": ["2", 0]},
        "_meta": {"title": "Peek"},
    }
    wf = Workflow.load(data)
    with pytest.raises(WorkflowError) as info:
        wf.output_node()
    assert "3 (SaveImage 'Save Image')" in str(info.value)
    assert "4 (PreviewImage 'Peek')" in str(info.value)
    assert wf.output_node("Peek") == "4"
    assert wf.output_node("3") == "3"


def test_named_output_must_be_an_image_output() -> None:
    with pytest.raises(WorkflowError, match="not an image output") as info:
        load("invert.json").output_node("Invert Image")
    assert info.value.node_id == "2"


def test_image_loader_detection() -> None:
    assert load("invert.json").image_loader() == "1"
    assert load("invert.json").image_loader("Plate") == "1"
    with pytest.raises(WorkflowError, match="no LoadImage"):
        load("empty_invert.json").image_loader()
    with pytest.raises(WorkflowError, match="no 'image' file input") as info:
        load("invert.json").image_loader("Invert Image")  # its image input is a link
    assert info.value.node_id == "2"


def test_several_loaders_need_a_name() -> None:
    data = raw("invert.json")
    data["5"] = copy.deepcopy(data["1"])
    data["5"]["_meta"]["title"] = "Matte"
    wf = Workflow.load(data)
    with pytest.raises(WorkflowError, match=r"1 \(LoadImage 'Plate'\), 5 \(LoadImage 'Matte'\)"):
        wf.image_loader()
    assert wf.image_loader("Matte") == "5"


# ---------------------------------------------------------------------------------------------
# validate_workflow


def test_validate_workflow_returns_the_targets() -> None:
    assert validate_workflow(load("invert.json"), needs_image_input=True) == WorkflowTargets(
        "3", "1"
    )
    assert validate_workflow(load("invert.json"), needs_image_input=False) == WorkflowTargets(
        "3", None
    )
    assert validate_workflow(raw("empty_invert.json"), needs_image_input=False).output_node == "3"
    assert validate_workflow(FIXTURES / "invert.json", needs_image_input=False, loader="Plate") == (
        WorkflowTargets("3", "1")
    )


@pytest.mark.parametrize(
    ("source", "kwargs", "match"),
    [
        ("ui_format.json", {"needs_image_input": False}, "Export"),
        ("empty_invert.json", {"needs_image_input": True}, "no LoadImage"),
        ("invert.json", {"needs_image_input": True, "output_node": "Plate"}, "not an image output"),
        ("invert.json", {"needs_image_input": True, "loader": "Missing"}, "'Missing'"),
    ],
)
def test_validate_workflow_refuses(source: str, kwargs: dict, match: str) -> None:
    with pytest.raises(WorkflowError, match=match):
        validate_workflow(FIXTURES / source, **kwargs)


def test_validate_workflow_refuses_a_workflow_without_outputs() -> None:
    data = raw("invert.json")
    del data["3"]
    with pytest.raises(WorkflowError, match="no image output node"):
        validate_workflow(data, needs_image_input=True)


# ---------------------------------------------------------------------------------------------
# Frame tokens


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{frame}", "1001"),
        ("{frame:04d}", "1001"),
        ("{frame:06d}", "001001"),
        ("shot_{frame:05d}_v{frame}", "shot_01001_v1001"),
        ("a {red|blue} car", "a {red|blue} car"),
        ('{"a": 1}', '{"a": 1}'),
        ("{frames} {Frame} {frame", "{frames} {Frame} {frame"),
        ("{}", "{}"),
        ("{{frame}}", "{1001}"),
        ("", ""),
    ],
)
def test_expand_frame_tokens(text: str, expected: str) -> None:
    assert expand_frame_tokens(text, 1001) == expected


def test_expand_frame_tokens_bad_spec_quotes_the_token() -> None:
    with pytest.raises(WorkflowError, match=r"\{frame:zz\}"):
        expand_frame_tokens("x{frame:zz}", 1)


def test_negative_frames_format() -> None:
    assert expand_frame_tokens("{frame:04d}", -5) == "-005"


# ---------------------------------------------------------------------------------------------
# Overrides


@pytest.mark.parametrize(
    ("text", "node", "name", "value"),
    [
        ("3.seed=42", "3", "seed", 42),
        ("KSampler.cfg=7.5", "KSampler", "cfg", 7.5),
        ("KSampler.denoise=1", "KSampler", "denoise", 1),
        ("Sampler.add_noise=true", "Sampler", "add_noise", True),
        ("Positive.text=a red car", "Positive", "text", "a red car"),
        ('Positive.text="42"', "Positive", "text", "42"),
        ("Positive.text=a=b", "Positive", "text", "a=b"),
        ("Positive.text=", "Positive", "text", ""),
        ("Positive.text=null", "Positive", "text", "null"),
        ("Positive.text={red|blue}", "Positive", "text", "{red|blue}"),
        ("Save v1.2.filename_prefix=out/x", "Save v1.2", "filename_prefix", "out/x"),
        (" 3 . seed =5", "3", "seed", 5),
        ('2.image=["1", 0]', "2", "image", ["1", 0]),
    ],
)
def test_override_parse(text: str, node: str, name: str, value: Any) -> None:
    override = Override.parse(text)
    assert (override.node, override.input, override.value) == (node, name, value)


@pytest.mark.parametrize("text", ["seed=5", "3.=5", ".seed=5", "3.seed", ""])
def test_override_parse_errors(text: str) -> None:
    with pytest.raises(WorkflowError, match=r"NODE\.INPUT=VALUE"):
        Override.parse(text)


def test_override_value_with_frame_token_is_read_per_frame() -> None:
    assert Override.parse("Noise.seed={frame}").value_for(1001) == 1001
    assert Override.parse("P.text=shot {frame:04d}").value_for(7) == "shot 0007"
    assert Override.parse('P.text="{frame}"').value_for(7) == "7"
    assert Override("P", "text", "f{frame}").value_for(7) == "f7"
    assert Override("P", "seed", 3).value_for(7) == 3
    assert Override.parse("Noise.seed={frame}").value_for(None) == "{frame}"


# ---------------------------------------------------------------------------------------------
# Per-frame prompts


def test_build_frame_prompt_binds_image_and_prefix_without_mutating() -> None:
    wf = load("invert.json")
    before = wf.to_dict()
    prompt = build_frame_prompt(
        wf, 1001, image_value="cluster/plate.1001.png", output_prefix="cc/job1/f1001"
    )
    assert prompt["1"]["inputs"]["image"] == "cluster/plate.1001.png"
    assert prompt["3"]["inputs"]["filename_prefix"] == "cc/job1/f1001"
    assert prompt["2"] == before["2"]
    assert wf.to_dict() == before
    prompt["2"]["inputs"]["image"][0] = "x"  # the prompt is a deep copy
    assert wf.nodes["2"]["inputs"]["image"] == ["1", 0]


def test_build_frame_prompt_without_image_or_prefix_keeps_the_workflow_values() -> None:
    prompt = build_frame_prompt(load("invert.json"), 1)
    assert prompt == raw("invert.json")


def test_build_frame_prompt_expands_tokens_only() -> None:
    prompt = build_frame_prompt(load("txt2img_braces.json"), 12)
    assert prompt["6"]["inputs"]["text"] == (
        'a {red|blue} car, {"a": 1}, shot 12, frame 0012, {frames}'
    )
    assert prompt["7"]["inputs"]["text"] == "blurry, {low quality}"
    assert prompt["6"]["inputs"]["clip"] == ["4", 1]


def test_build_frame_prompt_frame_token_in_the_saved_prefix() -> None:
    prompt = build_frame_prompt(load("empty_invert.json"), 5)
    assert prompt["3"]["inputs"]["filename_prefix"] == "shot/empty_0005"


def test_overrides_on_numbers_titles_and_frames() -> None:
    wf = load("txt2img_braces.json")
    prompt = build_frame_prompt(
        wf,
        1001,
        overrides=[
            Override.parse("KSampler.seed={frame}"),
            Override.parse("3.steps=4"),
            Override.parse("KSampler.cfg=6.5"),
            Override.parse("Empty Latent Image.width=768"),
            Override.parse("Positive.text=a {red|blue} bike at {frame:05d}"),
            "Negative.text=ugly",  # plain strings are parsed too
        ],
    )
    ks = prompt["3"]["inputs"]
    assert (ks["seed"], ks["steps"], ks["cfg"]) == (1001, 4, 6.5)
    assert isinstance(ks["seed"], int) and isinstance(ks["cfg"], float)
    assert prompt["5"]["inputs"]["width"] == 768
    assert prompt["6"]["inputs"]["text"] == "a {red|blue} bike at 01001"
    assert prompt["7"]["inputs"]["text"] == "ugly"
    assert wf.nodes["3"]["inputs"]["seed"] == 156680208700286


def test_output_prefix_wins_over_an_override_of_filename_prefix() -> None:
    prompt = build_frame_prompt(
        load("invert.json"),
        1,
        overrides=[Override.parse("Save Image.filename_prefix=mine")],
        output_prefix="ours",
    )
    assert prompt["3"]["inputs"]["filename_prefix"] == "ours"


def test_override_can_relink_an_input() -> None:
    prompt = build_frame_prompt(
        load("invert.json"), 1, overrides=[Override.parse('3.images=["1", 0]')]
    )
    assert prompt["3"]["inputs"]["images"] == ["1", 0]
    with pytest.raises(WorkflowError, match="missing node 99"):
        build_frame_prompt(load("invert.json"), 1, overrides=[Override.parse('3.images=["99", 0]')])


@pytest.mark.parametrize("value", ['["1", true]', '["1", 0, 0]', '["99", 0]'])
def test_override_with_a_malformed_link_is_refused(value: str) -> None:
    """An override is checked like the workflow's own links: ComfyUI would fail mid-render."""
    with pytest.raises(WorkflowError, match="override: input 'images' of node 3") as info:
        build_frame_prompt(load("invert.json"), 1, overrides=[Override.parse(f"3.images={value}")])
    assert info.value.node_id == "3"


@pytest.mark.parametrize(
    ("override", "match", "node_id"),
    [
        (
            "KSampler.sed=5",
            r"KSampler.sed: node 3 \(KSampler 'KSampler'\) has no input 'sed'.*seed",
            "3",
        ),
        ("Nope.seed=5", "no node with id or title 'Nope'", None),
        ("42.seed=5", "no node with id or title '42'", None),
    ],
)
def test_override_errors_name_node_and_input(
    override: str, match: str, node_id: str | None
) -> None:
    with pytest.raises(WorkflowError, match=match) as info:
        build_frame_prompt(load("txt2img_braces.json"), 1, overrides=[Override.parse(override)])
    assert info.value.node_id == node_id


def test_image_value_without_a_loader_is_an_error() -> None:
    with pytest.raises(WorkflowError, match="no LoadImage"):
        build_frame_prompt(load("empty_invert.json"), 1, image_value="x.png")


def test_preview_output_ignores_the_prefix() -> None:
    data = raw("invert.json")
    data["3"] = {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}}
    prompt = build_frame_prompt(Workflow.load(data), 1, output_prefix="ours")
    assert "filename_prefix" not in prompt["3"]["inputs"]


def test_named_loader_and_output() -> None:
    data = raw("invert.json")
    data["4"] = {
        "class_type": "PreviewImage",
        "inputs": {"images": ["2", 0]},
        "_meta": {"title": "Peek"},
    }
    prompt = build_frame_prompt(
        Workflow.load(data),
        1,
        image_value="a.png",
        loader="Plate",
        output_node="Save Image",
        output_prefix="p",
    )
    assert prompt["1"]["inputs"]["image"] == "a.png"
    assert prompt["3"]["inputs"]["filename_prefix"] == "p"


# ---------------------------------------------------------------------------------------------
# Batch prompts


def test_batch_prompt_expands_the_loader_into_an_image_batch_chain() -> None:
    wf = load("batch_temporal.json")
    before = wf.to_dict()
    frames = (1001, 1002, 1003, 1004)
    values = [f"cc/plate.{f}.png" for f in frames]
    prompt = build_batch_prompt(wf, frames, image_values=values, output_prefix="cc/j/c0")
    assert_valid_graph(prompt)
    assert wf.to_dict() == before

    loaders = [i for i, n in prompt.items() if n["class_type"] == "LoadImage"]
    batches = [i for i, n in prompt.items() if n["class_type"] == "ImageBatch"]
    assert len(loaders) == 4 and len(batches) == 3
    assert set(before) <= set(prompt)
    assert len(prompt) == len(before) + 6
    assert loaders[0] == "10"
    assert [prompt[i]["inputs"]["image"] for i in loaders] == values
    assert all(prompt[i]["inputs"]["upload"] == "image" for i in loaders)
    assert all(int(i) > 13 for i in loaders[1:] + batches)

    # chain: ImageBatch(ImageBatch(ImageBatch(l0, l1), l2), l3)
    first, second, last = (prompt[b]["inputs"] for b in batches)
    assert first == {"image1": ["10", 0], "image2": [loaders[1], 0]}
    assert second == {"image1": [batches[0], 0], "image2": [loaders[2], 0]}
    assert last == {"image1": [batches[1], 0], "image2": [loaders[3], 0]}

    # every consumer of the loader's IMAGE now reads the whole batch
    assert prompt["11"]["inputs"]["image"] == [batches[-1], 0]
    assert prompt["12"]["inputs"]["image1"] == [batches[-1], 0]
    assert prompt["12"]["inputs"]["image2"] == ["11", 0]
    assert prompt["13"]["inputs"]["filename_prefix"] == "cc/j/c0"


def test_batch_prompt_from_a_chunk_with_handles() -> None:
    chunk = FixedChunker(2, handles=1).split(FrameRange.parse("1-6"))[1]
    assert chunk.all_frames == (2, 3, 4, 5)
    values = [f"p.{f}.png" for f in chunk.all_frames]
    prompt = build_batch_prompt(load("batch_temporal.json"), chunk, image_values=values)
    assert_valid_graph(prompt)
    loaders = [n for n in prompt.values() if n["class_type"] == "LoadImage"]
    assert [n["inputs"]["image"] for n in loaders] == values
    assert loaders[1]["_meta"]["title"] == "Plate [3]"


def test_batch_of_one_frame_adds_no_nodes() -> None:
    prompt = build_batch_prompt(load("invert.json"), [7], image_values=["a.png"])
    assert set(prompt) == {"1", "2", "3"}
    assert prompt["1"]["inputs"]["image"] == "a.png"


def test_batch_of_one_frame_is_the_per_frame_prompt() -> None:
    """One frame needs no batching: the prompt is exactly the per-frame one, links as written
    (ComfyUI accepts integer node ids in links; we must not rewrite them)."""
    data = raw("invert.json")
    data["2"]["inputs"]["image"] = [1, 0]
    data["3"]["inputs"]["images"] = [2, 0]
    wf = Workflow.load(data)
    batch = build_batch_prompt(wf, [7], image_values=["a.png"], output_prefix="p")
    assert batch == build_frame_prompt(wf, 7, image_value="a.png", output_prefix="p")
    assert batch["2"]["inputs"]["image"] == [1, 0]


def test_batch_new_ids_come_after_every_numeric_id_even_with_gaps() -> None:
    """Added nodes never take a gap in the numbering: ids above the highest stay unambiguous
    next to the workflow's own nodes in ComfyUI's history and errors."""
    data = raw("invert.json")
    data["9"] = data.pop("3")  # ids 1, 2, 9: gaps at 3..8
    wf = Workflow.load(data)
    prompt = build_batch_prompt(wf, [1, 2, 3], image_values=["a", "b", "c"])
    assert_valid_graph(prompt)
    assert sorted(set(prompt) - set(data), key=int) == ["10", "11", "12", "13"]


def test_batch_new_ids_skip_non_numeric_and_existing_ids() -> None:
    data = {
        "load": {"class_type": "LoadImage", "inputs": {"image": "a.png"}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["load", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "x"}},
        "5:1": {"class_type": "ImageInvert", "inputs": {"image": ["load", 0]}},
    }
    prompt = build_batch_prompt(Workflow.load(data), [1, 2, 3], image_values=["a", "b", "c"])
    assert_valid_graph(prompt)
    assert set(prompt) - set(data) == {"4", "5", "6", "7"}
    assert prompt["5:1"]["inputs"]["image"] == prompt["2"]["inputs"]["image"]


def test_batch_tokens_and_overrides_use_the_first_frame() -> None:
    data = raw("batch_temporal.json")
    data["13"]["inputs"]["filename_prefix"] = "out/{frame:04d}"
    prompt = build_batch_prompt(
        Workflow.load(data),
        [8, 9],
        image_values=["a", "b"],
        overrides=[
            Override.parse("Temporal Blur.blur_radius=5"),
            Override.parse("Mix.blend_factor={frame}"),
        ],
    )
    assert prompt["13"]["inputs"]["filename_prefix"] == "out/0008"
    assert prompt["11"]["inputs"]["blur_radius"] == 5
    assert prompt["12"]["inputs"]["blend_factor"] == 8


def test_batch_refuses_mask_output_use() -> None:
    data = raw("invert.json")
    data["4"] = {
        "class_type": "MaskToImage",
        "inputs": {"mask": ["1", 1]},
        "_meta": {"title": "Matte"},
    }
    with pytest.raises(WorkflowError, match="MASK") as info:
        build_batch_prompt(Workflow.load(data), [1, 2], image_values=["a", "b"])
    assert info.value.node_id == "4"
    # per-frame mode is fine with it
    assert build_frame_prompt(Workflow.load(data), 1, image_value="a")["4"]["inputs"]["mask"] == [
        "1",
        1,
    ]


def test_batch_refuses_mask_use_of_the_loader_whatever_its_id() -> None:
    """The refusal depends on which node the link names (loader "10" here), not on ids that
    happen to equal the output index."""
    data = raw("batch_temporal.json")
    data["14"] = {"class_type": "MaskToImage", "inputs": {"mask": ["10", 1]}}
    with pytest.raises(WorkflowError, match="MASK") as info:
        build_batch_prompt(Workflow.load(data), [1, 2], image_values=["a", "b"])
    assert info.value.node_id == "14"
    # output 1 of another node is no concern of the loader
    data["14"]["inputs"]["mask"] = ["11", 1]
    prompt = build_batch_prompt(Workflow.load(data), [1, 2], image_values=["a", "b"])
    assert prompt["14"]["inputs"]["mask"] == ["11", 1]


@pytest.mark.parametrize(
    ("frames", "values", "match"),
    [([1, 2], ["a"], "1 images given for 2 frames"), ([], [], "at least one frame")],
)
def test_batch_argument_errors(frames: list, values: list, match: str) -> None:
    with pytest.raises(WorkflowError, match=match):
        build_batch_prompt(load("invert.json"), frames, image_values=values)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 40), st.sets(st.integers(1, 60), max_size=5))
def test_batch_graph_is_always_valid(count: int, extra_ids: set[int]) -> None:
    data = raw("batch_temporal.json")
    for n in extra_ids - {10, 11, 12, 13}:
        data[str(n)] = {"class_type": "ImageInvert", "inputs": {"image": ["10", 0]}}
    wf = Workflow.load(data)
    prompt = build_batch_prompt(
        wf, list(range(count)), image_values=[f"{i}.png" for i in range(count)]
    )
    assert_valid_graph(prompt)
    assert len(prompt) == len(data) + 2 * (count - 1)
    assert sum(n["class_type"] == "LoadImage" for n in prompt.values()) == count
    if count > 1:
        batch_ids = {i for i, n in prompt.items() if n["class_type"] == "ImageBatch"}
        for node_id in data:
            for value in prompt[node_id]["inputs"].values():
                # nobody outside the chain reads a single frame any more
                assert not (isinstance(value, list) and value[0] == "10")
        consumers = [prompt[str(n)]["inputs"]["image"] for n in extra_ids - {10, 11, 12, 13}]
        assert all(c[0] in batch_ids for c in consumers)


# ---------------------------------------------------------------------------------------------
# Sequence loader


def test_sequence_prompt_sets_the_window() -> None:
    wf = load("sequence_vhs.json")
    prompt = build_sequence_prompt(
        wf, "Plate Sequence", 10, 5, directory="/mnt/x/sh020", frame=1011, output_prefix="cc/s"
    )
    inputs = prompt["1"]["inputs"]
    assert (inputs["skip_first_images"], inputs["image_load_cap"], inputs["directory"]) == (
        10,
        5,
        "/mnt/x/sh020",
    )
    assert inputs["select_every_nth"] == 1
    assert prompt["3"]["inputs"]["filename_prefix"] == "cc/s"
    assert wf.nodes["1"]["inputs"]["skip_first_images"] == 0
    assert_valid_graph(prompt)


def test_sequence_prompt_keeps_the_directory_unless_given() -> None:
    prompt = build_sequence_prompt(load("sequence_vhs.json"), "1", 0, 3)
    assert prompt["1"]["inputs"]["directory"] == "/mnt/shows/plates/sh010"


def test_sequence_prompt_refuses_a_non_sequence_loader() -> None:
    with pytest.raises(WorkflowError, match=r"not a sequence loader.*skip_first_images") as info:
        build_sequence_prompt(load("invert.json"), "Plate", 0, 3)
    assert info.value.node_id == "1"


def _sequence_with_tokens() -> Workflow:
    data = raw("sequence_vhs.json")
    data["3"]["inputs"]["filename_prefix"] = "sh010/out_{frame:04d}"
    return Workflow.load(data)


def test_sequence_prompt_expands_tokens_to_the_given_frame_and_applies_overrides() -> None:
    """Each chunk's prompt names its own first frame (in outputs and overrides)."""
    prompt = build_sequence_prompt(
        _sequence_with_tokens(),
        "Plate Sequence",
        4,
        1,
        frame=1005,
        overrides=["Plate Sequence.select_every_nth={frame}"],
    )
    assert prompt["3"]["inputs"]["filename_prefix"] == "sh010/out_1005"
    assert prompt["1"]["inputs"]["select_every_nth"] == 1005
    assert (
        prompt["1"]["inputs"]["skip_first_images"],
        prompt["1"]["inputs"]["image_load_cap"],
    ) == (
        4,
        1,
    )


def test_sequence_prompt_without_a_frame_leaves_tokens_as_written() -> None:
    prompt = build_sequence_prompt(_sequence_with_tokens(), "1", 0, 2)
    assert prompt["3"]["inputs"]["filename_prefix"] == "sh010/out_{frame:04d}"


def test_sequence_prompt_directory_must_be_an_input_of_the_loader() -> None:
    """A loader without a ``directory`` input cannot be sent to a folder: refused, not ignored."""
    data = raw("sequence_vhs.json")
    del data["1"]["inputs"]["directory"]
    wf = Workflow.load(data)
    assert build_sequence_prompt(wf, "1", 0, 2)["1"]["inputs"]["image_load_cap"] == 2
    with pytest.raises(WorkflowError, match="'directory'") as info:
        build_sequence_prompt(wf, "1", 0, 2, directory="/mnt/x")
    assert info.value.node_id == "1"


@pytest.mark.parametrize(
    ("first", "count"), [(-1, 3), (0, 0), (0, 1.5), (True, 3), (0, True), ("0", 3)]
)
def test_sequence_prompt_refuses_bad_windows(first: int, count: Any) -> None:
    with pytest.raises(WorkflowError, match="whole number"):
        build_sequence_prompt(load("sequence_vhs.json"), "1", first, count)


# ---------------------------------------------------------------------------------------------
# Batch outputs


def test_map_batch_outputs_drops_handles() -> None:
    images = ["i2", "i3", "i4", "i5"]
    assert map_batch_outputs(images, (2, 3, 4, 5), (3, 4)) == {3: "i3", 4: "i4"}
    assert map_batch_outputs(["a"], [7], [7]) == {7: "a"}


def test_map_batch_outputs_count_mismatch_is_an_error() -> None:
    with pytest.raises(WorkflowError, match="returned 3 images for 4 frames"):
        map_batch_outputs(["a", "b", "c"], (1, 2, 3, 4), (2, 3))


@pytest.mark.parametrize("extra", [1, 4])
def test_map_batch_outputs_more_images_than_frames_is_an_error(extra: int) -> None:
    """A workflow that grew the batch (interpolation, an extra frame) cannot be paired by
    position: the first images would be written over the wrong frames without a word."""
    images = [f"i{n}" for n in range(4 + extra)]
    with pytest.raises(WorkflowError, match=f"returned {4 + extra} images for 4 frames"):
        map_batch_outputs(images, (2, 3, 4, 5), (3, 4))


def test_map_batch_outputs_delivered_must_be_rendered() -> None:
    with pytest.raises(WorkflowError, match=r"\[9\]"):
        map_batch_outputs(["a", "b"], (1, 2), (2, 9))


@settings(max_examples=100, deadline=None)
@given(
    st.sets(st.integers(-50, 200), min_size=1, max_size=60), st.integers(1, 10), st.integers(0, 3)
)
def test_map_batch_outputs_over_chunks(frames: set[int], size: int, handles: int) -> None:
    out: dict[int, str] = {}
    for chunk in FixedChunker(size, handles).split(frames):
        images = [f"img{f}" for f in chunk.all_frames]
        mapped = map_batch_outputs(images, chunk.all_frames, chunk.frames)
        assert not set(mapped) & set(chunk.handles_before + chunk.handles_after)
        out.update(mapped)
    assert out == {f: f"img{f}" for f in frames}
