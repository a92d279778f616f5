"""transformers' image and text classifiers as a user would hand them to ``pwmpr grow --model hf_models:NAME``
(bench/reach.py --zoo transformers).

``SPECS`` names one small, untrained configuration of each model type transformers ships an image or a sequence
classifier for: NAME -> (task, model type, input size, config arguments). ``task`` is ``image`` (3-channel pictures
of ``size`` pixels) or ``text`` (``size`` token ids of a vocabulary of ``VOCAB``). Each NAME is also a factory
``NAME(num_classes, input_shape)`` of this module, built from its config alone (``from_config``: nothing is
downloaded). transformers is not a pwmpr dependency: ``pip install transformers`` first. It imports torchvision,
so pwmpr's torchvision shim runs first (docs: machine notes).
"""

from __future__ import annotations

from _factories import add_factories
from torch import nn

VOCAB = 64  # token ids of the text models (bench/reach.py's token data use 2..VOCAB-1)
_VIT = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
        "image_size": 32, "patch_size": 8}
_STAGES = {"hidden_sizes": [8, 16, 32, 64], "depths": [1, 1, 1, 1]}
_SWIN = {"image_size": 32, "patch_size": 2, "embed_dim": 8, "depths": [1, 1], "num_heads": [1, 2], "window_size": 4}
_TEXT = {"vocab_size": VOCAB, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
         "intermediate_size": 64, "max_position_embeddings": 64}
_DECODER = {**_TEXT, "num_key_value_heads": 2, "pad_token_id": 0}

#: name -> (task, transformers model type, input size, config arguments)
SPECS: dict[str, tuple[str, str, int, dict]] = {
    # image classifiers
    "vit": ("image", "vit", 32, _VIT),
    "deit": ("image", "deit", 32, {**_VIT, "pooler_output_size": 32, "encoder_stride": 8}),
    "beit": ("image", "beit", 32, {**_VIT, "use_relative_position_bias": True}),
    "data2vec_vision": ("image", "data2vec-vision", 32, _VIT),
    "dinov2": ("image", "dinov2", 32, _VIT),
    "dinov2_with_registers": ("image", "dinov2_with_registers", 32, _VIT),
    "ijepa": ("image", "ijepa", 32, _VIT),
    "vit_msn": ("image", "vit_msn", 32, _VIT),
    "clip": ("image", "clip", 32, {"vision_config": _VIT}),
    "siglip": ("image", "siglip", 32, {"vision_config": _VIT}),
    "convnext": ("image", "convnext", 32, _STAGES),
    "convnextv2": ("image", "convnextv2", 32, _STAGES),
    "resnet": ("image", "resnet", 32, {**_STAGES, "embedding_size": 8}),
    "regnet": ("image", "regnet", 32, {**_STAGES, "embedding_size": 8, "groups_width": 8}),
    "bit": ("image", "bit", 32, {**_STAGES, "embedding_size": 8, "num_groups": 4}),
    "mobilenet_v1": ("image", "mobilenet_v1", 32, {"depth_multiplier": 0.25, "image_size": 32}),
    "mobilenet_v2": ("image", "mobilenet_v2", 32, {"depth_multiplier": 0.25, "image_size": 32}),
    "mobilevit": ("image", "mobilevit", 64, {"image_size": 64, "hidden_sizes": [16, 24, 32],
                                             "neck_hidden_sizes": [8, 8, 16, 16, 24, 24, 32]}),
    "mobilevitv2": ("image", "mobilevitv2", 64, {"image_size": 64, "width_multiplier": 0.25}),
    "efficientnet": ("image", "efficientnet", 32, {"image_size": 32, "width_coefficient": 0.25,
                                                   "depth_coefficient": 0.25, "hidden_dim": 320}),
    "swin": ("image", "swin", 32, _SWIN),
    "swinv2": ("image", "swinv2", 32, _SWIN),
    "donut_swin": ("image", "donut-swin", 32, _SWIN),
    "focalnet": ("image", "focalnet", 32, {"image_size": 32, "embed_dim": 8, "depths": [1, 1],
                                           "hidden_sizes": [8, 16]}),
    "levit": ("image", "levit", 64, {"image_size": 64, "hidden_sizes": [32, 48, 64], "num_attention_heads": [1, 2, 2],
                                     "depths": [1, 1, 1], "key_dim": [8, 8, 8],
                                     "down_ops": [["Subsample", 8, 2, 4, 2, 2], ["Subsample", 8, 4, 4, 2, 2]]}),
    "poolformer": ("image", "poolformer", 32, _STAGES),
    "segformer": ("image", "segformer", 32, {**_STAGES, "num_attention_heads": [1, 1, 2, 2],
                                             "decoder_hidden_size": 32}),
    "pvt": ("image", "pvt", 32, {**_STAGES, "image_size": 32, "num_attention_heads": [1, 1, 2, 2]}),
    "pvt_v2": ("image", "pvt_v2", 32, {**_STAGES, "num_attention_heads": [1, 1, 2, 2]}),
    "hiera": ("image", "hiera", 64, {"image_size": [64, 64], "embed_dim": 8, "depths": [1, 1, 1, 1],
                                     "num_heads": [1, 1, 2, 2]}),
    "swiftformer": ("image", "swiftformer", 32, {"depths": [1, 1, 1, 1], "embed_dims": [8, 16, 32, 64]}),
    # sequence classifiers
    "bert": ("text", "bert", 16, _TEXT),
    "roberta": ("text", "roberta", 16, {**_TEXT, "pad_token_id": 1}),
    "xlm_roberta": ("text", "xlm-roberta", 16, {**_TEXT, "pad_token_id": 1}),
    "distilbert": ("text", "distilbert", 16, {"vocab_size": VOCAB, "dim": 32, "n_layers": 2, "n_heads": 2,
                                              "hidden_dim": 64, "max_position_embeddings": 64}),
    "albert": ("text", "albert", 16, {**_TEXT, "embedding_size": 16}),
    "electra": ("text", "electra", 16, {**_TEXT, "embedding_size": 32}),
    "deberta_v2": ("text", "deberta-v2", 16, _TEXT),
    "mpnet": ("text", "mpnet", 16, {**_TEXT, "pad_token_id": 1}),
    "ernie": ("text", "ernie", 16, _TEXT),
    "megatron_bert": ("text", "megatron-bert", 16, _TEXT),
    "roformer": ("text", "roformer", 16, {**_TEXT, "embedding_size": 32}),
    "mobilebert": ("text", "mobilebert", 16, {**_TEXT, "embedding_size": 16, "intra_bottleneck_size": 16,
                                              "true_hidden_size": 16, "num_feedforward_networks": 1}),
    "squeezebert": ("text", "squeezebert", 16, {**_TEXT, "embedding_size": 32, "q_groups": 1, "k_groups": 1,
                                                "v_groups": 1, "post_attention_groups": 1,
                                                "intermediate_groups": 1, "output_groups": 1}),
    "modernbert": ("text", "modernbert", 16, {**_TEXT, "pad_token_id": 0, "global_attn_every_n_layers": 1,
                                              "local_attention": 16}),
    "gpt2": ("text", "gpt2", 16, {"vocab_size": VOCAB, "n_embd": 32, "n_layer": 2, "n_head": 2, "n_positions": 64,
                                  "pad_token_id": 0}),
    "opt": ("text", "opt", 16, {**_TEXT, "ffn_dim": 64, "word_embed_proj_dim": 32, "pad_token_id": 1}),
    "bloom": ("text", "bloom", 16, {"vocab_size": VOCAB, "hidden_size": 32, "n_layer": 2, "n_head": 2,
                                    "pad_token_id": 0}),
    "gpt_neox": ("text", "gpt_neox", 16, {**_TEXT, "pad_token_id": 0}),
    "falcon": ("text", "falcon", 16, {"vocab_size": VOCAB, "hidden_size": 32, "num_hidden_layers": 2,
                                      "num_attention_heads": 2, "pad_token_id": 0}),
    "llama": ("text", "llama", 16, _DECODER),
    "mistral": ("text", "mistral", 16, _DECODER),
    "qwen2": ("text", "qwen2", 16, _DECODER),
    "gemma": ("text", "gemma", 16, {**_DECODER, "head_dim": 16}),
    "phi": ("text", "phi", 16, {**_TEXT, "pad_token_id": 0}),
    "fnet": ("text", "fnet", 16, _TEXT),
    "funnel": ("text", "funnel", 16, {"vocab_size": VOCAB, "d_model": 32, "n_head": 2, "d_head": 16, "d_inner": 64,
                                      "block_sizes": [1, 1], "num_decoder_layers": 1}),
    "convbert": ("text", "convbert", 16, {**_TEXT, "embedding_size": 32}),
    "nystromformer": ("text", "nystromformer", 16, {**_TEXT, "num_landmarks": 4, "segment_means_seq_len": 16}),
}

#: Model types whose auto class maps to more than one class (a distilled variant): the plain classifier.
_CLASSES = {"deit": "DeiTForImageClassification", "levit": "LevitForImageClassification"}


def build(name: str, num_classes: int) -> nn.Module:
    """Model ``name`` of ``SPECS``, untrained, with ``num_classes`` outputs."""
    from pwmpr._tv_compat import import_torchvision

    import_torchvision()  # first: the CPU-torch shim transformers' torchvision import needs
    import transformers

    task, model_type, _size, kwargs = SPECS[name]
    config = transformers.AutoConfig.for_model(model_type, num_labels=num_classes, **kwargs)
    if model_type in _CLASSES:
        return getattr(transformers, _CLASSES[model_type])(config)
    auto = (transformers.AutoModelForImageClassification if task == "image"
            else transformers.AutoModelForSequenceClassification)
    return auto.from_config(config)


add_factories(globals(), SPECS, build)
