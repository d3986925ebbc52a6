"""Every config key with its default and a one-line comment (detectron2 ``defaults.py`` style).

Each method's keys live in their own node and are read only by that method. YAML files
override these defaults (and may inherit from each other with ``_BASE_``); see
``mdistiller.engine.cfg.load_cfg``.
"""

from yacs.config import CfgNode as CN

CFG = CN()

# ---------------------------------------------------------------------------------------
# Experiment
# ---------------------------------------------------------------------------------------
CFG.EXPERIMENT = CN()
CFG.EXPERIMENT.PROJECT = "distill"  # run folders go to LOG.PREFIX/PROJECT/(NAME or TAG)
CFG.EXPERIMENT.NAME = ""  # run folder name; empty = use TAG
CFG.EXPERIMENT.TAG = "default"  # comma-separated description, used when NAME is empty
CFG.EXPERIMENT.SEED = 0  # seeds python, numpy and torch (each rank adds its rank)
CFG.EXPERIMENT.DETERMINISTIC = False  # deterministic kernels (slower; for exact resume checks)
CFG.EXPERIMENT.PUBLISHED_TOP1 = -1.0  # published top-1 of this method and pair (-1 = unknown)

# ---------------------------------------------------------------------------------------
# Dataset
# ---------------------------------------------------------------------------------------
CFG.DATASET = CN()
CFG.DATASET.TYPE = "cifar100"  # dataset registry name: cifar100, imagenet, fashion_mnist, synthetic
CFG.DATASET.ROOT = ""  # where the data lives; empty = the dataset's default under data/
CFG.DATASET.NUM_WORKERS = 2  # data-loader worker processes
CFG.DATASET.SUBSET = 1.0  # fraction of the training set used (a fixed, seeded subset)
CFG.DATASET.VAL_SUBSET = 1.0  # fraction of the validation set used (a fixed subset)
CFG.DATASET.AUG_ON_DEVICE = True  # build augmented views on the training device, after collation
CFG.DATASET.SYNTHETIC_SIZE = 256  # number of training images of the synthetic dataset
CFG.DATASET.SYNTHETIC_CLASSES = 10  # number of classes of the synthetic dataset
CFG.DATASET.TEST = CN()
CFG.DATASET.TEST.BATCH_SIZE = 64  # validation batch size (global)

# ---------------------------------------------------------------------------------------
# Distiller
# ---------------------------------------------------------------------------------------
CFG.DISTILLER = CN()
CFG.DISTILLER.TYPE = "NONE"  # distiller registry name: NONE (vanilla), KD, DKD, MLKD, SLD, ...
CFG.DISTILLER.TEACHER = "ResNet50"  # teacher model registry name
CFG.DISTILLER.STUDENT = "resnet32"  # student model registry name
CFG.DISTILLER.TEACHER_CKPT = ""  # teacher checkpoint; empty = mdistiller's download_ckpts location
CFG.DISTILLER.EXTRA = []  # further distillers whose losses are added (e.g. ["REVIEWKD"])

# ---------------------------------------------------------------------------------------
# Solver
# ---------------------------------------------------------------------------------------
CFG.SOLVER = CN()
CFG.SOLVER.TRAINER = "base"  # kept for reference YAML files; the views follow the distiller
CFG.SOLVER.BATCH_SIZE = 64  # global training batch size (split across ranks)
CFG.SOLVER.EPOCHS = 240  # number of training epochs (numbered from 1)
CFG.SOLVER.LR = 0.05  # initial learning rate
CFG.SOLVER.LR_DECAY_STAGES = [150, 180, 210]  # epochs after which the lr is multiplied by LR_DECAY_RATE
CFG.SOLVER.LR_DECAY_RATE = 0.1  # step-schedule factor
CFG.SOLVER.WEIGHT_DECAY = 0.0001  # SGD weight decay
CFG.SOLVER.MOMENTUM = 0.9  # SGD momentum
CFG.SOLVER.TYPE = "SGD"  # optimizer (SGD only, as the reference)
CFG.SOLVER.DEVICE = "auto"  # auto (CUDA when present), cpu or cuda
CFG.SOLVER.AMP = "none"  # mixed precision: none, bf16 (CPU/CUDA) or fp16 (CUDA, with a scaler)
CFG.SOLVER.CHANNELS_LAST = False  # channels_last memory format for models and inputs
CFG.SOLVER.COMPILE = False  # torch.compile the student and the teacher's inference copy (first steps compile)
CFG.SOLVER.COMPILE_MODE = "default"  # torch.compile mode: default, reduce-overhead (CUDA graphs), max-autotune
CFG.SOLVER.PREFETCH = True  # copy the next batch to the device while the step runs (a side CUDA stream)
CFG.SOLVER.RETAIN_HOST_MEMORY = True  # on the CPU, glibc malloc keeps freed memory: no page faults per step
CFG.SOLVER.SYNC_BN = False  # SyncBatchNorm for the student under torchrun (CUDA only)

# ---------------------------------------------------------------------------------------
# Logging and checkpoints
# ---------------------------------------------------------------------------------------
CFG.LOG = CN()
CFG.LOG.TENSORBOARD_FREQ = 500  # kept for mdistiller files; see READ_FREQ
CFG.LOG.READ_FREQ = 50  # steps between host reads of training statistics (bar, TensorBoard, NaN check)
CFG.LOG.SAVE_CHECKPOINT_FREQ = 40  # epochs between kept epoch_N / student_N checkpoints
CFG.LOG.PREFIX = "./output"  # root of run folders
CFG.LOG.WANDB = False  # log to Weights & Biases (WANDB_MODE=offline works)
CFG.LOG.TENSORBOARD = True  # write TensorBoard scalars (tensorboardX)
CFG.LOG.PROGRESS = True  # show a tqdm progress bar per epoch

# ---------------------------------------------------------------------------------------
# KD (Hinton et al.), mdistiller's keys
# ---------------------------------------------------------------------------------------
CFG.KD = CN()
CFG.KD.TEMPERATURE = 4.0  # softmax temperature
CFG.KD.LOSS = CN()
CFG.KD.LOSS.CE_WEIGHT = 0.1  # weight of the cross-entropy term
CFG.KD.LOSS.KD_WEIGHT = 0.9  # weight of the KL term

# ---------------------------------------------------------------------------------------
# DKD (Zhao et al., CVPR 2022), mdistiller's keys
# ---------------------------------------------------------------------------------------
CFG.DKD = CN()
CFG.DKD.CE_WEIGHT = 1.0  # weight of the cross-entropy term
CFG.DKD.ALPHA = 1.0  # weight of target-class KD (TCKD)
CFG.DKD.BETA = 8.0  # weight of non-target-class KD (NCKD)
CFG.DKD.T = 4.0  # softmax temperature
CFG.DKD.WARMUP = 20  # epochs of linear warm-up of the KD term

# ---------------------------------------------------------------------------------------
# MLKD (Jin et al., CVPR 2023: multi-level logit distillation)
# ---------------------------------------------------------------------------------------
CFG.MLKD = CN()
CFG.MLKD.TEMPERATURES = [4.0, 3.0, 5.0, 2.0, 6.0]  # temperatures, in the reference's order
CFG.MLKD.CE_WEIGHT = 0.1  # weight of the cross-entropy term (each view)
CFG.MLKD.KD_WEIGHT = 0.9  # weight of the instance, class and batch terms
CFG.MLKD.PAPER_MODE = False  # True = the paper's formulas instead of the reference code's quirks

# ---------------------------------------------------------------------------------------
# SLD (Swapped Logit Distillation)
# ---------------------------------------------------------------------------------------
CFG.SLD = CN()
CFG.SLD.GAMMA = 150  # the student (pseudo-teacher) swap loss is active for epoch > GAMMA
CFG.SLD.TEMPERATURES = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]  # temperatures summed over
CFG.SLD.CE_WEIGHT = 0.1  # weight of the cross-entropy term (each view)
CFG.SLD.KD_WEIGHT = 0.9  # weight of each swapped-logit KL term
CFG.SLD.DETACH_PSEUDO_TEACHER = False  # True = no gradient through the student's swapped targets
CFG.SLD.VIEWS = 2  # 2 = weak + strong views (reference); 1 = weak view only

# ---------------------------------------------------------------------------------------
# Feature-based methods (mdistiller's keys)
# ---------------------------------------------------------------------------------------
CFG.FITNET = CN()
CFG.FITNET.HINT_LAYER = 2  # index into feats["feats"] of the hinted stage (0..4)
CFG.FITNET.INPUT_SIZE = (32, 32)  # input size used to probe the feature shapes
CFG.FITNET.LOSS = CN()
CFG.FITNET.LOSS.CE_WEIGHT = 1.0  # weight of the cross-entropy term
CFG.FITNET.LOSS.FEAT_WEIGHT = 100.0  # weight of the hint (MSE) term

CFG.AT = CN()
CFG.AT.P = 2  # power of the activations in the attention map
CFG.AT.LOSS = CN()
CFG.AT.LOSS.CE_WEIGHT = 1.0  # weight of the cross-entropy term
CFG.AT.LOSS.FEAT_WEIGHT = 1000.0  # weight of the attention-transfer term

CFG.OFD = CN()
CFG.OFD.LOSS = CN()
CFG.OFD.LOSS.CE_WEIGHT = 1.0  # weight of the cross-entropy term
CFG.OFD.LOSS.FEAT_WEIGHT = 0.001  # weight of the margin (partial L2) term
CFG.OFD.CONNECTOR = CN()
CFG.OFD.CONNECTOR.KERNEL_SIZE = 1  # kernel size of the student-to-teacher connector convs

CFG.RKD = CN()
CFG.RKD.DISTANCE_WEIGHT = 25  # weight of the distance term inside the RKD loss
CFG.RKD.ANGLE_WEIGHT = 50  # weight of the angle term inside the RKD loss
CFG.RKD.LOSS = CN()
CFG.RKD.LOSS.CE_WEIGHT = 1.0  # weight of the cross-entropy term
CFG.RKD.LOSS.FEAT_WEIGHT = 1.0  # weight of the RKD term
CFG.RKD.PDIST = CN()
CFG.RKD.PDIST.EPSILON = 1e-12  # squared distances are clamped at this value
CFG.RKD.PDIST.SQUARED = False  # use squared distances

CFG.KDSVD = CN()
CFG.KDSVD.K = 1  # number of teacher singular vectors compared
CFG.KDSVD.LOSS = CN()
CFG.KDSVD.LOSS.CE_WEIGHT = 1.0  # weight of the cross-entropy term
CFG.KDSVD.LOSS.FEAT_WEIGHT = 1.0  # weight of the SVD term

CFG.CRD = CN()
CFG.CRD.MODE = "exact"  # positive of each sample: itself (exact) or a sample of its class (relax)
CFG.CRD.FEAT = CN()
CFG.CRD.FEAT.DIM = 128  # embedding dimension
CFG.CRD.FEAT.STUDENT_DIM = 256  # channels of the student's pooled feature
CFG.CRD.FEAT.TEACHER_DIM = 256  # channels of the teacher's pooled feature
CFG.CRD.LOSS = CN()
CFG.CRD.LOSS.CE_WEIGHT = 1.0  # weight of the cross-entropy term
CFG.CRD.LOSS.FEAT_WEIGHT = 0.8  # weight of the contrastive term
CFG.CRD.NCE = CN()
CFG.CRD.NCE.K = 16384  # negatives per sample
CFG.CRD.NCE.MOMENTUM = 0.5  # momentum of the memory-bank update
CFG.CRD.NCE.TEMPERATURE = 0.07  # temperature of the contrastive scores

CFG.NST = CN()
CFG.NST.LOSS = CN()
CFG.NST.LOSS.CE_WEIGHT = 1.0  # weight of the cross-entropy term
CFG.NST.LOSS.FEAT_WEIGHT = 50.0  # weight of the neuron-selectivity (MMD) term

CFG.PKT = CN()
CFG.PKT.LOSS = CN()
CFG.PKT.LOSS.CE_WEIGHT = 1.0  # weight of the cross-entropy term
CFG.PKT.LOSS.FEAT_WEIGHT = 30000.0  # weight of the probabilistic-transfer term

CFG.SP = CN()
CFG.SP.LOSS = CN()
CFG.SP.LOSS.CE_WEIGHT = 1.0  # weight of the cross-entropy term
CFG.SP.LOSS.FEAT_WEIGHT = 3000.0  # weight of the similarity-preserving term

CFG.VID = CN()
CFG.VID.LOSS = CN()
CFG.VID.LOSS.CE_WEIGHT = 1.0  # weight of the cross-entropy term
CFG.VID.LOSS.FEAT_WEIGHT = 1.0  # weight of the variational (Gaussian NLL) term
CFG.VID.EPS = 1e-5  # floor added to the predicted variance
CFG.VID.INIT_PRED_VAR = 5.0  # initial (and, as in mdistiller, fixed) predicted variance
CFG.VID.INPUT_SIZE = (32, 32)  # input size used to probe the feature shapes

CFG.REVIEWKD = CN()
CFG.REVIEWKD.CE_WEIGHT = 1.0  # weight of the cross-entropy term
CFG.REVIEWKD.REVIEWKD_WEIGHT = 1.0  # weight of the review (HCL) term
CFG.REVIEWKD.WARMUP_EPOCHS = 20  # epochs of linear warm-up of the review term
CFG.REVIEWKD.SHAPES = [1, 8, 16, 32]  # student fusion sizes, deepest (pooled) first
CFG.REVIEWKD.OUT_SHAPES = [1, 8, 16, 32]  # output sizes, deepest (pooled) first
CFG.REVIEWKD.IN_CHANNELS = [64, 128, 256, 256]  # student channels, shallowest first (last = pooled)
CFG.REVIEWKD.OUT_CHANNELS = [64, 128, 256, 256]  # teacher channels, shallowest first (last = pooled)
CFG.REVIEWKD.MAX_MID_CHANNEL = 512  # cap on the fusion width
CFG.REVIEWKD.STU_PREACT = False  # fuse the student's pre-ReLU stage outputs
