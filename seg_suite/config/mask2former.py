"""Config keys for seg_suite's Mask2Former-style models, on top of detectron2's ``get_cfg()``.

``add_seg_suite_config(cfg)`` adds every key the official Mask2Former YAML files use, so they
merge unchanged (facebookresearch/Mask2Former, ``mask2former/config.py`` and
``train_net.py``, which also calls DeepLab's ``add_deeplab_config``), plus seg_suite's own
keys (plain-ViT backbone, DropLoss threshold, debiasing).

Defaults are the values of the official YAML files, not the stale Python defaults of
``add_maskformer2_config``. Unless a comment says otherwise, the source is
``configs/coco/panoptic-segmentation/maskformer2_R50_bs16_50ep.yaml`` and its
``Base-COCO-PanopticSegmentation.yaml``; keys no YAML sets keep the Python default of
``mask2former/config.py``. That makes a bare ``get_cfg() + add_seg_suite_config`` config the
R50 COCO-panoptic Mask2Former (133 classes), with the training schedule left to YAML files.

The keys of the Swin backbone (MODEL.SWIN.*) are added so Swin YAML files parse, but seg_suite has
no Swin backbone: building one fails with detectron2's "no object named ... in BACKBONE registry".
"""

from detectron2.config import CfgNode as CN


def add_deeplab_keys(cfg: CN) -> None:
    """Keys of detectron2 ``projects/DeepLab/deeplab/config.py`` (``add_deeplab_config``), whose
    defaults are copied from there; the official Mask2Former ``train_net.py`` adds them first."""
    cfg.INPUT.CROP.SINGLE_CATEGORY_MAX_AREA = 1.0
    cfg.SOLVER.POLY_LR_POWER = 0.9
    cfg.SOLVER.POLY_LR_CONSTANT_ENDING = 0.0
    cfg.MODEL.SEM_SEG_HEAD.LOSS_TYPE = "hard_pixel_mining"
    cfg.MODEL.SEM_SEG_HEAD.PROJECT_FEATURES = ["res2"]
    cfg.MODEL.SEM_SEG_HEAD.PROJECT_CHANNELS = [48]
    cfg.MODEL.SEM_SEG_HEAD.ASPP_CHANNELS = 256
    cfg.MODEL.SEM_SEG_HEAD.ASPP_DILATIONS = [6, 12, 18]
    cfg.MODEL.SEM_SEG_HEAD.ASPP_DROPOUT = 0.1
    cfg.MODEL.SEM_SEG_HEAD.USE_DEPTHWISE_SEPARABLE_CONV = False
    cfg.MODEL.RESNETS.RES4_DILATION = 1
    cfg.MODEL.RESNETS.RES5_MULTI_GRID = [1, 2, 4]
    cfg.MODEL.RESNETS.STEM_TYPE = "deeplab"


def add_seg_suite_config(cfg: CN) -> None:
    """Add (in place) every key seg_suite's models, data and training read. See module docstring."""
    add_deeplab_keys(cfg)

    # --- Model: meta-architecture, backbone and normalisation (Base-COCO-PanopticSegmentation.yaml
    # and maskformer2_R50_bs16_50ep.yaml).
    cfg.MODEL.META_ARCHITECTURE = "MaskFormer"
    cfg.MODEL.BACKBONE.FREEZE_AT = 0
    cfg.MODEL.PIXEL_MEAN = [123.675, 116.280, 103.530]  # RGB ImageNet mean on the 0-255 scale
    cfg.MODEL.PIXEL_STD = [58.395, 57.120, 57.375]
    cfg.MODEL.RESNETS.STRIDE_IN_1X1 = False  # torchvision-style ResNet weights
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    cfg.INPUT.FORMAT = "RGB"

    # --- Pixel decoder / head (maskformer2_R50_bs16_50ep.yaml).
    head = cfg.MODEL.SEM_SEG_HEAD
    head.NAME = "MaskFormerHead"
    head.IN_FEATURES = ["res2", "res3", "res4", "res5"]
    head.IGNORE_VALUE = 255
    head.NUM_CLASSES = 133  # COCO panoptic; every official YAML sets its own
    head.LOSS_WEIGHT = 1.0
    head.CONVS_DIM = 256
    head.MASK_DIM = 256
    head.NORM = "GN"
    head.PIXEL_DECODER_NAME = "MSDeformAttnPixelDecoder"
    head.DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES = ["res3", "res4", "res5"]
    head.DEFORMABLE_TRANSFORMER_ENCODER_N_POINTS = 4  # mask2former/config.py (no YAML sets it)
    head.DEFORMABLE_TRANSFORMER_ENCODER_N_HEADS = 8  # mask2former/config.py (no YAML sets it)
    head.COMMON_STRIDE = 4
    head.TRANSFORMER_ENC_LAYERS = 6

    # --- Transformer decoder, loss and inference (maskformer2_R50_bs16_50ep.yaml).
    cfg.MODEL.MASK_FORMER = CN()
    mf = cfg.MODEL.MASK_FORMER
    mf.TRANSFORMER_DECODER_NAME = "MultiScaleMaskedTransformerDecoder"
    mf.TRANSFORMER_IN_FEATURE = "multi_scale_pixel_decoder"
    mf.DEEP_SUPERVISION = True
    mf.NO_OBJECT_WEIGHT = 0.1
    mf.CLASS_WEIGHT = 2.0
    mf.MASK_WEIGHT = 5.0
    mf.DICE_WEIGHT = 5.0
    mf.HIDDEN_DIM = 256
    mf.NUM_OBJECT_QUERIES = 100
    mf.NHEADS = 8
    mf.DROPOUT = 0.0
    mf.DIM_FEEDFORWARD = 2048
    mf.ENC_LAYERS = 0
    mf.PRE_NORM = False
    mf.ENFORCE_INPUT_PROJ = False
    mf.SIZE_DIVISIBILITY = 32
    mf.DEC_LAYERS = 10  # 9 decoder layers + the prediction from the learnable queries
    mf.TRAIN_NUM_POINTS = 112 * 112  # 12544
    mf.OVERSAMPLE_RATIO = 3.0
    mf.IMPORTANCE_SAMPLE_RATIO = 0.75
    mf.TEST = CN()
    mf.TEST.SEMANTIC_ON = True
    mf.TEST.INSTANCE_ON = True
    mf.TEST.PANOPTIC_ON = True
    mf.TEST.OBJECT_MASK_THRESHOLD = 0.8
    mf.TEST.OVERLAP_THRESHOLD = 0.8
    mf.TEST.SEM_SEG_POSTPROCESSING_BEFORE_INFERENCE = False  # mask2former/config.py
    # seg_suite extra: CutLER-style DropLoss (Wang et al. 2023): unmatched queries whose mask has
    # IoU <= this with every ground-truth mask are not pushed to "no object". 0.0 disables it;
    # CutLER uses 0.01 (MODEL.ROI_HEADS.DROPLOSS_IOU_THRESH). See seg_suite/modeling/criterion.py.
    mf.DROPLOSS_IOU = 0.0
    # seg_suite extra: DebiasPL/DebiasMatch logit adjustment (Wang et al. CVPR 2022) against
    # long-tailed cluster frequencies. Momentum of the running class-frequency estimate; 0.0
    # disables it, DebiasPL uses 0.999 (--qhat_m). TAU: adjustment strength (DebiasPL's scripts:
    # --tau 0.4). See seg_suite/modeling/criterion.py.
    mf.DEBIAS_MOMENTUM = 0.0
    mf.DEBIAS_TAU = 0.4

    # --- Data (Base-COCO-PanopticSegmentation.yaml; mask2former/config.py where no YAML sets it).
    cfg.INPUT.DATASET_MAPPER_NAME = "coco_panoptic_lsj"
    cfg.INPUT.COLOR_AUG_SSD = False  # mask2former/config.py (ADE20K YAML files set True)
    cfg.INPUT.SIZE_DIVISIBILITY = -1  # mask2former/config.py (ADE20K YAML files set 512)
    cfg.INPUT.IMAGE_SIZE = 1024  # large-scale jitter output size
    cfg.INPUT.MIN_SCALE = 0.1
    cfg.INPUT.MAX_SCALE = 2.0

    # --- Optimisation (Base-COCO-PanopticSegmentation.yaml; the schedule stays in YAML files).
    cfg.SOLVER.OPTIMIZER = "ADAMW"
    cfg.SOLVER.BASE_LR = 0.0001
    cfg.SOLVER.WEIGHT_DECAY = 0.05
    cfg.SOLVER.WEIGHT_DECAY_EMBED = 0.0  # mask2former/config.py: no decay on query/level embeddings
    cfg.SOLVER.BACKBONE_MULTIPLIER = 0.1
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = True
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "full_model"
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = 0.01
    cfg.SOLVER.CLIP_GRADIENTS.NORM_TYPE = 2.0

    # --- Swin keys (mask2former/config.py defaults); parsed only, see module docstring.
    cfg.MODEL.SWIN = CN()
    sw = cfg.MODEL.SWIN
    sw.PRETRAIN_IMG_SIZE = 224
    sw.PATCH_SIZE = 4
    sw.EMBED_DIM = 96
    sw.DEPTHS = [2, 2, 6, 2]
    sw.NUM_HEADS = [3, 6, 12, 24]
    sw.WINDOW_SIZE = 7
    sw.MLP_RATIO = 4.0
    sw.QKV_BIAS = True
    sw.QK_SCALE = None
    sw.DROP_RATE = 0.0
    sw.ATTN_DROP_RATE = 0.0
    sw.DROP_PATH_RATE = 0.3
    sw.APE = False
    sw.PATCH_NORM = True
    sw.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    sw.USE_CHECKPOINT = False

    # --- seg_suite: plain-ViT backbone from seg_suite.features (MODEL.BACKBONE.NAME
    # "build_vit_sfp_backbone"), with a ViTDet-style simple feature pyramid (Li et al. 2022).
    cfg.MODEL.VIT = CN()
    vit = cfg.MODEL.VIT
    vit.NAME = "dino_vitb8"  # a seg_suite.features.BACKBONES name
    vit.WEIGHTS = ""  # local DINO/DINOv2 checkpoint; "" = seg_suite.features' cache lookup
    vit.RANDOM_INIT = False  # True: no weights at all (tests, benchmarks)
    vit.DEPTH = 0  # build only this many blocks (tests, benchmarks); 0 = the architecture's depth
    vit.LAYER = -1  # which block's output feeds the pyramid (ViTDet: the last one)
    vit.OUT_CHANNELS = 256  # pyramid width (ViTDet: 256)
    vit.NORM = "GN"  # norm in the pyramid convs; ViTDet uses channel LayerNorm, absent in detectron2 0.6
    vit.OUT_FEATURES = ["res2", "res3", "res4", "res5"]  # strides 4, 8, 16, 32
    vit.FREEZE = False  # True: the ViT is frozen, only the pyramid trains
