"""Configuration dataclasses, one per concern.

They are plain data (no torch), saved with ``asdict()`` inside every checkpoint,
next to every run and export, and written into the ONNX metadata, so export, mix
and eval rebuild everything from them and nobody retypes an architecture constant.
"""

from __future__ import annotations

import dataclasses
import textwrap
from dataclasses import dataclass, field
from typing import Any, TypeVar

from g2g.errors import G2GError
from g2g.faces.preprocess import DEFAULT_ZOOM

T = TypeVar("T")

# Five-point alignment template (left eye, right eye, nose tip, left and right mouth
# corner, MTCNN's order) of dlib's 150 px face chip. The identity network reads
# exactly this chip; g2g's crops use the same template zoomed out by
# ``AlignConfig.zoom`` so the generator also sees forehead, chin and some hair.
DLIB_CHIP_SIZE = 150
DLIB_TEMPLATE_150 = (
    (40.61, 35.26),
    (101.81, 35.99),
    (71.87, 71.55),
    (42.79, 100.47),
    (100.08, 101.09),
)


@dataclass(frozen=True)
class AlignConfig:
    size: int = 128  # side of the square aligned crop, px (64 to 256)
    zoom: float = DEFAULT_ZOOM  # crop covers zoom x dlib's chip around the same centre

    def template(self) -> list[tuple[float, float]]:
        """The 5 landmark positions in a crop of ``size`` px."""
        c = DLIB_CHIP_SIZE / 2
        s = self.size / (DLIB_CHIP_SIZE * self.zoom)
        return [((x - c) * s + self.size / 2, (y - c) * s + self.size / 2) for x, y in DLIB_TEMPLATE_150]


@dataclass(frozen=True)
class PrepareConfig:
    size: int = 128  # aligned crop side, px
    zoom: float = DEFAULT_ZOOM  # see AlignConfig.zoom
    faces: str = "largest"  # largest | all | skip-multiple
    min_face: int = 40  # smallest face accepted: longer side of its box, px in the source photo
    min_score: float = 0.95  # smallest MTCNN detection probability accepted
    max_pixels: int = 40_000_000  # larger images are skipped (decompression bombs)
    batch_size: int = 16  # images per MTCNN batch
    device: str = "auto"  # auto | cpu | cuda[:N]
    workers: int = 4  # image-decoding threads
    fmt: str = "png"  # crop format: png (lossless) | jpg (quality 95)
    engine: str = "local"  # local | ray: a Ray Data pipeline on a cluster (g2g/prepare/on_ray.py)
    address: str | None = None  # --engine ray: the cluster to join ("auto", "ray://host:10001"); None: a local one
    ray_workers: int | None = None  # --engine ray: detecting actors; None: one per GPU, else one per CPU

    def align(self) -> AlignConfig:
        return AlignConfig(size=self.size, zoom=self.zoom)


# --- the vocabulary of every option with a fixed set of values (the CLI shows them in --help; the verbs check them)
PREPARE_FORMATS = ("png", "jpg")
MIX_FORMATS = ("jpg", "png", "webp")
FACE_POLICIES = ("largest", "all", "skip-multiple")
MIX_FACE_POLICIES = ("largest", "all", "skip-multiple")  # all: every face of a pose photo, in one output
PAIR_MODES = ("all", "zip", "by-name", "random")  # g2g mix --pairs (or a CSV file)
GAN_LOSSES = ("hinge", "nonsat")
ID_SCHEDULES = ("constant", "linear", "step")
PERCEPTUAL_NETS = ("stlpips", "vgg19")
DISCRIMINATORS = ("patch", "projected")  # g2g.train.projected_disc.build_discriminator
OPTIMIZERS = ("rmsprop", "adam")
# the training recipe of each identity encoder: funit (the seed's, on the whole rest) or appearance (E_A reads the
# masked rest, g2gcli/faces/masked_rest.py); the recipes are g2g.train.recipes, their mixers g2g.methods
RECIPE_OF_ENCODER = {"funit": "funit", "appearance": "appearance", "pooled": "appearance", "dlib": "appearance"}
IDENTITY_ENCODERS = tuple(RECIPE_OF_ENCODER)


@dataclass(frozen=True)
class ModelConfig:
    """Generator and discriminator sizes (FUNIT's layout)."""

    image_size: int = 128  # side of the aligned crops the model reads and writes
    zoom: float = DEFAULT_ZOOM  # alignment zoom of those crops (AlignConfig.zoom)
    content_dim: int = 64  # channels after the content encoder's first conv
    content_downs: int = 3  # stride-2 downsamplings: content map at 1/8 resolution
    content_res: int = 2  # residual blocks (instance norm) in the content encoder
    max_dim: int = 512  # channel cap of the content map and decoder
    class_dim: int = 64  # channels after the class encoder's first conv
    class_downs: int = 4  # stride-2 downsamplings in the class encoder
    class_code: int = 64  # size of the identity code (FUNIT's latent_dim)
    mlp_dim: int = 256  # hidden width of the MLP that makes AdaIN parameters
    mlp_blocks: int = 3  # linear layers in that MLP
    dec_res: int = 2  # AdaIN residual blocks in the decoder
    disc_dim: int = 64  # channels after the discriminator's first conv
    disc_blocks: int = 4  # downsampling stages of the patch discriminator
    disc_max: int = 1024  # channel cap of the discriminator
    # funit: the seed's (whole rest, pooled class code into AdaIN); on the masked rest (g2gcli/appearance.py):
    # appearance (identity photos warped onto the rest's geometry), pooled (funit's pooled K-shot code from the
    # unwarped photos), dlib (the frozen dlib embedding of the unwarped photos + a trained projection)
    identity_encoder: str = "funit"
    app_dim: int = 32  # appearance: channels at full resolution (doubled per scale)
    app_max: int = 192  # appearance: channel cap
    app_res: int = 2  # appearance: residual blocks at 1/8 resolution
    # appearance: what the decoder draws its residual over. "none": the warped, colour-matched paste (the shipped
    # model's); a `g2g mix --fixes` spec ("default"): the default method's composition with those fixes, so the
    # model learns to redraw only what that composition still gives away (the refiner presets)
    base_fixes: str = "none"
    # appearance: σ (px at image_size) of the Gaussian low-pass taken out of the decoder's residual; > 0, it redraws
    # detail only and the face keeps its base's tone and light (a refiner's low-frequency drift is what a classifier
    # sees first: docs/realism.md); 0: the whole residual (the shipped model's)
    residual_sigma: float = 0.0

    @property
    def recipe(self) -> str:
        """The training recipe (and so the mixer) of this model: ``funit`` or ``appearance``."""
        return RECIPE_OF_ENCODER[self.identity_encoder]

    @property
    def warped_identity(self) -> bool:
        """E_B reads identity photos warped onto the target geometry, and the decoder draws over their paste."""
        return self.identity_encoder == "appearance"

    @property
    def content_channels(self) -> int:
        return min(self.content_dim * 2**self.content_downs, self.max_dim)

    @property
    def content_hw(self) -> int:
        return self.image_size // 2**self.content_downs


@dataclass(frozen=True)
class TrainConfig:
    """Cross-training settings. A run takes them from its preset (PRESETS: the whole recipe) and the options given;
    these defaults are only the base a preset starts from (``g2g train`` never uses them bare)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    steps: int = 100_000  # generator updates
    max_minutes: float = 0.0  # stop (with a checkpoint) after this much training time; 0: no limit
    batch_size: int = 8  # pairs (a, b) per step
    k_shot: int = 1  # images averaged into one identity code
    lr_gen: float = 1e-4  # generator learning rate
    lr_dis: float = 1e-4  # discriminator learning rate
    optimizer: str = "rmsprop"  # rmsprop (FUNIT) | adam
    weight_decay: float = 1e-4
    beta1: float = 0.5  # Adam only
    beta2: float = 0.999  # Adam only
    alpha_vgg: float = 1.0  # α: perceptual loss
    gamma_cyc: float = 10.0  # γ: cycle consistency A and B (L1)
    lambda_adv: float = 1.0  # λ_g: generator GAN loss
    delta_id: float = 1.0  # δ: identity loss, final value of its schedule
    zeta_dis: float = 0.2  # ζ: discriminator loss scale
    self_recon: float = 1.0  # weight of the self-reconstruction L1 G(E_A(a), E_B(a)) vs a
    gan_loss: str = "hinge"  # hinge | nonsat
    id_schedule: str = "constant"  # constant | linear | step
    id_start: float = 0.0  # δ at step 0 for linear/step schedules
    id_warmup: int = 0  # steps of the linear ramp (0: whole run)
    id_step_every: int = 10_000  # steps between δ increases (step schedule)
    id_step_count: int = 4  # number of equal increases up to delta_id (step schedule)
    perceptual: str = "stlpips"  # stlpips (shift-tolerant LPIPS VGG16, offline) | vgg19 (ImageNet)
    # patch: FUNIT's residual patch discriminator, trained from scratch; projected: small heads on the frozen ST-LPIPS
    # VGG16 (Projected GANs), which tells photographs from fakes after far fewer steps
    discriminator: str = "patch"
    erase_landmarks: bool = False  # erase eyes/nose/mouth of the image that supplies the rest
    ema_beta: float = 0.999  # EMA of the generator for sampling and export
    amp: bool = True  # mixed precision on CUDA
    compile: bool = False  # torch.compile the generator
    seed: int = 0
    val_fraction: float = 0.1  # identities held out for validation (sample sheets, g2g eval --split)
    tensorboard: bool = False  # also log losses and sample sheets to RUN/tensorboard
    val_people: int = 0  # when > 0: hold out exactly this many identities instead of val_fraction of them
    checkpoint_every: int = 1000
    sample_every: int = 1000
    log_every: int = 10
    device: str = "auto"
    workers: int = 2
    flip: bool = True  # random horizontal flips of training crops (landmarks follow)


# --- presets: each one named training recipe, whole (docs/cli/train.md tabulates them from here) ---------------------
# the TrainConfig fields a recipe sets; the others (device, workers, seed, logging, the split, AMP) belong to the run
RECIPE_FIELDS = ("steps", "batch_size", "k_shot", "optimizer", "lr_gen", "lr_dis", "weight_decay", "beta1", "beta2",
                 "alpha_vgg", "gamma_cyc", "lambda_adv", "delta_id", "zeta_dis", "self_recon", "gan_loss", "id_schedule",
                 "id_start", "id_warmup", "id_step_every", "id_step_count", "perceptual", "discriminator", "erase_landmarks",
                 "ema_beta", "flip")


@dataclass(frozen=True)
class Preset:
    """A named recipe: the architecture and its size (ModelConfig fields) and the training (TrainConfig fields:
    optimiser, learning rates, loss weights, schedule, batch). Fields it leaves out keep the dataclass defaults."""

    summary: str  # one line for --help and docs/cli/train.md
    model: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)

    def config(self, model: dict[str, Any] | None = None, **train: Any) -> TrainConfig:
        """This recipe as a TrainConfig; ``model`` and ``train`` fields given here replace the recipe's own."""
        return TrainConfig(model=ModelConfig(**{**self.model, **(model or {})}), **{**self.train, **train})


# the default model's training (g2gcli/assets/model/g2g_model.json): Adam 2e-4, s = α = γ = δ = 1, no GAN term
_APPEARANCE_TRAIN = dict(batch_size=8, optimizer="adam", lr_gen=2e-4, lr_dis=2e-4, alpha_vgg=1.0, gamma_cyc=1.0,
                         lambda_adv=0.0, delta_id=1.0, zeta_dis=0.2, self_recon=1.0)
# the seed's FUNIT training (FUNIT's funit_animals.yaml): RMSprop 1e-4, γ = 10, λ_g = 1
_FUNIT_TRAIN = dict(batch_size=8, optimizer="rmsprop", lr_gen=1e-4, lr_dis=1e-4, alpha_vgg=1.0, gamma_cyc=10.0,
                    lambda_adv=1.0, delta_id=1.0, zeta_dis=0.2, self_recon=1.0)
_APPEARANCE_CPU = dict(image_size=64, identity_encoder="appearance", app_dim=24, app_max=160, app_res=2,
                       disc_dim=32, disc_max=256, disc_blocks=3)

# the refiner: the appearance networks over the default method's composition, with the GAN term on mixed faces
_REFINER_TRAIN = {**_APPEARANCE_TRAIN, "lambda_adv": 1.0}

PRESETS: dict[str, Preset] = {
    "appearance": Preset("the default model's recipe: masked rest, warped identity photos; 64 px, for a CPU",
                         _APPEARANCE_CPU, _APPEARANCE_TRAIN),
    "appearance-gpu": Preset("appearance at GPU size: E_A and E_B of 32 to 192 channels, 128 px, batch 64",
                             dict(image_size=128, identity_encoder="appearance"), {**_APPEARANCE_TRAIN, "batch_size": 64}),
    "appearance-tiny": Preset("appearance in miniature for tests: 32 px, a few channels, batch 2",
                              dict(image_size=32, identity_encoder="appearance", app_dim=8, app_max=32, app_res=1,
                                   disc_dim=8, disc_max=32, disc_blocks=2), {**_APPEARANCE_TRAIN, "batch_size": 2}),
    "refiner": Preset("appearance over the default method's composition, with the GAN term; 128 px, narrow, for a CPU",
                      dict(image_size=128, identity_encoder="appearance", app_dim=16, app_max=96, app_res=1,
                           disc_dim=16, disc_max=128, disc_blocks=4, base_fixes="default"),
                      {**_REFINER_TRAIN, "batch_size": 4}),
    "refiner-gpu": Preset("refiner at GPU size: the appearance-gpu networks over the default method's composition",
                          dict(image_size=128, identity_encoder="appearance", base_fixes="default"),
                          {**_REFINER_TRAIN, "batch_size": 64}),
    # FUNIT-size generator (content map 512 x 16 x 16 at 128 px)
    "funit": Preset("the seed's recipe: FUNIT's generator and training at FUNIT's size, 128 px",
                    dict(image_size=128), _FUNIT_TRAIN),
    "funit-small": Preset("funit at half width: 2 CPU cores train it in about an hour",
                          dict(image_size=128, content_dim=32, content_res=2, max_dim=256, class_dim=32, class_code=64,
                               mlp_dim=128, dec_res=2, disc_dim=32, disc_max=256), _FUNIT_TRAIN),
    "funit-tiny": Preset("funit in miniature for tests: 64 px, a few channels",
                         dict(image_size=64, content_dim=16, content_downs=3, content_res=1, max_dim=128, class_dim=16,
                              class_downs=3, class_code=32, mlp_dim=64, mlp_blocks=2, dec_res=1, disc_dim=16,
                              disc_blocks=3, disc_max=128), _FUNIT_TRAIN),
}
PRESET_ALIASES = {"full": "funit", "small": "funit-small", "tiny": "funit-tiny"}  # the names before the recipes had theirs
DEFAULT_PRESET = "appearance"  # what `g2g train DATA -o RUN` trains: the shipped model's recipe


def get_preset(name: str) -> Preset:
    """The preset called ``name`` (or an old alias of it); an unknown name is a one-line usage error."""
    found = PRESETS.get(PRESET_ALIASES.get(name, name))
    if found is None:
        raise G2GError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}", usage=True)
    return found


def model_preset(name: str, **overrides: Any) -> ModelConfig:
    """The architecture of preset ``name``, with ``overrides``."""
    return ModelConfig(**{**get_preset(name).model, **overrides})


def format_value(value: Any) -> str:
    """A config value as the docs and --help write it: 0.0002, 1, true."""
    return f"{value:g}" if isinstance(value, float) else str(value).lower() if isinstance(value, bool) else str(value)


def preset_tables() -> str:
    """The markdown of every preset's whole recipe (docs/cli/train.md shows it; a test keeps the two equal)."""
    cfgs = {name: p.config() for name, p in PRESETS.items()}
    rows = [(k, [getattr(c, k) for c in cfgs.values()]) for k in RECIPE_FIELDS]
    rows += [(f"model.{f.name}", [getattr(c.model, f.name) for c in cfgs.values()]) for f in dataclasses.fields(ModelConfig)]
    lines = ["| field | " + " | ".join(f"`{n}`" for n in cfgs) + " |", "|---" * (len(cfgs) + 1) + "|"]
    lines += [f"| `{k}` | " + " | ".join(map(format_value, vals)) + " |" for k, vals in rows if len(set(vals)) > 1]
    same = ", ".join(f"`{k}` {format_value(vals[0])}" for k, vals in rows if len(set(vals)) == 1)
    return "\n".join(lines) + "\n\n" + textwrap.fill(f"The same in every preset: {same}.", 116) + "\n"


@dataclass(frozen=True)
class MixConfig:
    method: str = "auto"  # auto (the model if given, else the default method) or a method of g2g.methods
    size: int | None = None  # aligned crop side of the paste methods, px; None (auto): the pose faces' own
    # resolution, 128 to 512 (g2g.photos.auto_side); a model uses its own
    pairs: str = "all"  # all | zip | by-name | random | path to a pairs CSV
    per_pose: int = 1  # identities per pose for --pairs random
    seed: int = 0
    batch_size: int = 16  # decoder batch
    crop_only: bool = False  # write the aligned crop instead of pasting back
    aligned: bool = False  # inputs are already aligned crops
    grid: bool = False  # write a contact sheet (poses x identities)
    shard: str = "1/1"  # i/n: this process's share of the plan
    device: str = "auto"
    strict: bool = False  # any skip makes a non-zero exit
    wait: bool = False  # another run writing the same OUT and shard: wait for it (else stop with one line)
    faces: str = "largest"  # photos with several faces: largest | all (poses; identities: largest) | skip-multiple
    reference: str | None = None  # a photo of the person to replace: only pose faces that match it are mixed
    reference_distance: float = 0.6  # dlib embedding distance below which a face matches (dlib's same-person bound)
    min_face: int = 40
    min_score: float = 0.95
    feather: float = 0.1  # width of the paste-back mask's soft edge, fraction of the crop
    keep_mouth: bool | None = None  # keep the pose's own mouth opening; None: only for the default method (auto, no model)
    fixes: str | None = None  # expression-paste's give-away removers (g2g/methods/compose.py): default | all | none | a list;
    # None: default for the default method (auto, no model), none for an explicit --method
    workers: int = 4
    fmt: str = "jpg"  # output image format
    quality: int | None = None  # JPEG/WebP quality 1-100 (WebP 100: lossless); None: 95; refused with png
    overwrite: bool = False  # OUT made with other settings: replace its outputs (else refused); redo this shard's
    max_pixels: int = 40_000_000  # larger photos are skipped (decompression bombs), as in prepare
    grid_max: int = 16  # --grid shows at most this many poses (rows) and identities (columns)
    engine: str = "local"  # local | ray: a Ray Data pipeline on a cluster (g2g/mix/on_ray.py)
    address: str | None = None  # --engine ray: the cluster to join ("auto", "ray://host:10001"); None: a local one
    ray_workers: int | None = None  # --engine ray: mixing actors; None: one per GPU, else half the CPUs


@dataclass(frozen=True)
class EvalConfig:
    """``g2g eval`` settings (g2g/eval/run.py)."""

    eval_net: str = "dlib"  # identity network(s), comma list: dlib | facenet-vggface2 | facenet-casia-webface
    device: str = "auto"  # auto | cpu | cuda[:N]
    batch_size: int = 32  # crops per network call
    json: str | None = None  # also write the report as JSON here
    out_dir: str | None = None  # plots and CSVs (default TARGET/eval)
    max_pairs: int = 2000  # same- and different-person reference pairs, each, sampled with seed
    max_images: int = 256  # held-out crops for recon, sampled with seed
    split: str | None = None  # RUN dir or its split.json: recon uses the "val" identities
    examples: int = 4  # worst and best outputs shown in the example sheet
    baselines: bool = False  # also mix and score the no-model methods on the run's pairs (g2g/eval/baselines.py)
    real: str | None = None  # realism: aligned crops of real people (per-person folders); default: the run's own crops
    real_max: int = 1000  # realism: at most this many crops of --real, sampled with seed
    seed: int = 0


def from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """Rebuild a (possibly nested) config dataclass, ignoring unknown keys."""
    kwargs = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name not in data:
            continue
        value = data[f.name]
        ftype = f.type if not isinstance(f.type, str) else globals().get(f.type)
        if isinstance(value, dict) and isinstance(ftype, type) and dataclasses.is_dataclass(ftype):
            value = from_dict(ftype, value)
        kwargs[f.name] = value
    return cls(**kwargs)  # type: ignore[call-arg]
