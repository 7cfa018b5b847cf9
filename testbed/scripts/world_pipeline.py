"""The whole Mix-of-Show pipeline on the world testbed, through the pack's own nodes (no shortcuts).

Shared by the demo (scripts/demo.py --world), testbed/bench_fidelity.py and the fast end-to-end test:
train concepts from their 'photos' (EDLoRADataset + EDLoRATrain), load them (EDLoRALoader), fuse
(GradientFusion closed form or average, OrthogonalMerge), sample (EDLoRATextEncode + KSampler or
RegionPrompt + RegionalKSampler) and recognise what was drawn (testbed.world).
Needs a booted host (scripts/comfy_host.boot).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class WorldPipeline:
    host: object
    model: object
    clip: object
    vae: object
    train_options: dict | None = None  # EDLoRATrain inputs; default: testbed.world.recipe.TRAIN
    sample_options: dict | None = None  # default: recipe.SAMPLE

    def __post_init__(self):
        recipe = self.host.pack("testbed.world.recipe")
        self.train_options = {**recipe.TRAIN, **(self.train_options or {})}
        self.sample_options = {**recipe.SAMPLE, **(self.sample_options or {})}

    @classmethod
    def load(cls, host, weights: str | None = None, **options) -> WorldPipeline:
        """The world-trained testbed (``weights`` defaults to the shipped file) through its loader node."""
        loader = host.pack("testbed.nodes")
        with torch.inference_mode():
            if weights is None:
                model, clip, vae = loader.TestbedCheckpointLoader().load(loader.WORLD, 0)
            else:
                model, clip, vae = host.pack("testbed.model").load_trained(weights)
        return cls(host, model, clip, vae, **options)

    def _nodes(self, module: str):
        return self.host.pack(f"nodes.{module}")

    # --- training -------------------------------------------------------------------------------------
    def dataset(self, concept, photos: int = 6, seed: int = 0):
        """MOS_DATASET of the concept's photos, captions and masks (EDLoRADataset node)."""
        images, captions, masks = self.host.pack("testbed.world.concepts").concept_photos(concept, photos, seed)
        return self._nodes("training.nodes").EDLoRADataset().build(
            torch.from_numpy(images).float() / 255.0, "\n".join(captions), torch.from_numpy(masks))[0]

    def train(self, concept, name: str | None = None, mode: str = "edlora", slot: int = 0, seed: int = 0,
              **overrides) -> str:
        """Train ``concept`` with EDLoRATrain; returns its file name in models/edloras."""
        options = {**self.train_options, **overrides}
        steps, batch, size = options.pop("steps"), options.pop("batch_size"), options.pop("resolution")
        result = self._nodes("training.nodes").EDLoRATrain().train(
            self.model, self.clip, self.vae, self.dataset(concept, seed=seed), name or concept.name,
            " ".join(concept.words), " ".join(["<rand-0.013>", concept.class_word]), steps, 1, batch, size, seed,
            False, save_every=0, mode=mode, orthogonal_slot=slot, **options)["result"]
        return result[2]

    # --- combining concepts ---------------------------------------------------------------------------
    def loaded(self, files: list[str], strength_model: float = 1.0, strength_clip: float = 1.0):
        """(MODEL, CLIP) with every concept applied through an EDLoRALoader chain."""
        model, clip = self.model, self.clip
        loader = self._nodes("concepts.nodes").EDLoRALoader()
        with torch.inference_mode():
            for name in files:
                model, clip = loader.load(model, clip, name, strength_model, strength_clip)
        return model, clip

    def combined(self, files: list[str], method: str, ridge: float | None = None, **options):
        """(MODEL, CLIP) holding all concepts: 'gradient' (GradientFusion closed form; ``ridge`` defaults to
        recipe.FUSE's; ``options``: other GradientFusion inputs, e.g. kv_targets), 'average' (its weight
        averaging), 'orthogonal' (OrthogonalMerge sum, weight 1 per concept's own delta scale)."""
        fusion = self._nodes("fusion.nodes")
        concepts = None
        with torch.inference_mode():
            for name in files:
                concepts = fusion.EDLoRAConceptList().append(name, 1.0, 1.0, concepts)[0]
            if method == "orthogonal":
                merge = self._nodes("fusion.orthogonal_nodes").OrthogonalMerge()
                return merge.merge(self.model, self.clip, concepts, 1.0)[:2]
            mode = {"gradient": "closed_form", "average": "average"}[method]
            f = self.host.pack("testbed.world.recipe").FUSE
            ridge = f["ridge"] if ridge is None else ridge  # one ridge for every stage, as the record measured
            return fusion.GradientFusion().fuse(self.model, self.clip, mode, f["steps"], f["resolution"], f["seed"],
                                                ridge, concepts=concepts, spatial_ridge=ridge, anchor="base",
                                                **{"kv_targets": f["kv_targets"], **options})[:2]

    # --- sampling -------------------------------------------------------------------------------------
    def _encode(self, clip, text: str):
        return self._nodes("concepts.nodes").EDLoRATextEncode().encode(clip, text)[0]

    def _decode(self, latent) -> np.ndarray:
        import nodes as cn

        return (cn.VAEDecode().decode(self.vae, latent)[0].clamp(0, 1) * 255).round().byte().numpy()

    def autoencoded(self, images: np.ndarray) -> np.ndarray:
        """``images`` [N, height, width, 3] uint8 through VAEEncode and VAEDecode: what the model could draw at best."""
        import nodes as cn

        with torch.inference_mode():
            return self._decode(cn.VAEEncode().encode(self.vae, torch.from_numpy(images).float() / 255.0)[0])

    def sample(self, model, clip, prompt: str, count: int, seed: int = 0, negative: str = "",
               canvas: tuple[int, int] = (64, 64)) -> np.ndarray:
        """``count`` images [N, height, width, 3] uint8 of ``prompt`` (one KSampler batch); ``canvas`` =
        (width, height) in px."""
        import nodes as cn

        o = self.sample_options
        with torch.inference_mode():
            latent = cn.EmptyLatentImage().generate(*canvas, count)[0]
            out = cn.KSampler().sample(model, seed, o["steps"], o["cfg"], o["sampler"], o["scheduler"],
                                       self._encode(clip, prompt), self._encode(clip, negative), latent)[0]
            return self._decode(out)

    def sample_regions(self, model, clip, prompt: str, boxes: list[tuple[str, tuple]], count: int, seed: int = 0,
                       regional: bool = True, canvas: tuple[int, int] = (64, 64)) -> np.ndarray:
        """Images of a scene: global ``prompt`` plus (region prompt, box) pairs through RegionPrompt and
        RegionalKSampler; ``regional=False`` samples the global prompt alone with KSampler (the baseline)."""
        import nodes as cn

        if not regional:
            return self.sample(model, clip, prompt, count, seed, canvas=canvas)
        o, region_nodes = self.sample_options, self._nodes("regions.nodes")
        with torch.inference_mode():
            regions = None
            for text, (x, y, w, h) in boxes:
                regions = region_nodes.RegionPrompt().add(clip, text, "", x, y, w, h, 1.0, regions=regions)[0]
            latent = cn.EmptyLatentImage().generate(*canvas, count)[0]
            out = region_nodes.RegionalKSampler().sample(
                model, regions, self._encode(clip, prompt), self._encode(clip, ""), latent, seed, o["steps"],
                o["cfg"], o["sampler"], o["scheduler"], 1.0)[0]
            return self._decode(out)

    # --- scoring --------------------------------------------------------------------------------------
    def recognise(self, images: np.ndarray, box=None) -> list:
        scorer = self.host.pack("testbed.world.scorer")
        return [scorer.recognise(image, box) for image in images]
