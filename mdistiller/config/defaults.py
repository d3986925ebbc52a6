"""The framework's config keys with their defaults and a one-line comment (detectron2
``defaults.py`` style).

Each method declares its own node, next to its code (``defaults`` of the distiller class);
registering the method adds it here, so once :mod:`mdistiller.distillers` is imported
(``mdistiller.config.load`` does it) ``CFG`` holds every registered method's node. YAML files
override these defaults (and may inherit from each other with ``_BASE_``); see
``mdistiller.config.load.load_cfg``.
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
CFG.EXPERIMENT.PLUGINS = []  # method files (relative to the config file) or modules imported before the config is read
CFG.EXPERIMENT.HOOKS = []  # names of trainer hooks registered (@register_hook) by the PLUGINS, run after the built-in ones
CFG.EXPERIMENT.LOGIT_STAND = False  # the logit-standardization repository's key; read as DISTILLER.LOGIT_STAND

# ---------------------------------------------------------------------------------------
# Dataset
# ---------------------------------------------------------------------------------------
CFG.DATASET = CN()
CFG.DATASET.TYPE = "cifar100"  # dataset registry name: cifar100, imagenet, imagefolder, tiny_imagenet, fashion_mnist, ...
CFG.DATASET.ROOT = ""  # where the data lives; empty = the dataset's default under data/
CFG.DATASET.NUM_WORKERS = 2  # data-loader worker processes
CFG.DATASET.SUBSET = 1.0  # fraction of the training set used (a fixed, seeded subset)
CFG.DATASET.VAL_SUBSET = 1.0  # fraction of the validation set used (a fixed subset)
CFG.DATASET.HOLDOUT = 0.0  # fraction of each training class held out to select the reported epoch; 0 = off (test set)
CFG.DATASET.HOLDOUT_SEED = 0  # seed of the holdout split, independent of EXPERIMENT.SEED (one split for a whole study)
CFG.DATASET.IMAGE_SIZE = 0  # imagefolder, tiny_imagenet: image side (32 = CIFAR-style pipeline); 0 = their default
CFG.DATASET.TINY_IMAGENET_VIEW = "rotate_flip"  # tiny_imagenet training view: "rotate_flip" (upstream: RandomRotation(20) + flip, no crop) or "crop_flip" (4-pixel padded crop + flip)
CFG.DATASET.AUG_ON_DEVICE = True  # build augmented views on the training device, after collation
CFG.DATASET.DECODE = "cpu"  # imagenet/imagefolder decoding: cpu (workers: libjpeg, PIL for other files) or device (CUDA: nvJPEG)
CFG.DATASET.DECODE_DRAFT = True  # DECODE cpu: decode JPEGs at 1/2, 1/4 or 1/8 size (PIL draft) when the crops allow
CFG.DATASET.SYNTHETIC_SIZE = 256  # number of training images of the synthetic dataset
CFG.DATASET.SYNTHETIC_CLASSES = 10  # number of classes of the synthetic dataset
CFG.DATASET.TEST = CN()
CFG.DATASET.TEST.BATCH_SIZE = 64  # validation batch size (global)

# ---------------------------------------------------------------------------------------
# Distiller
# ---------------------------------------------------------------------------------------
CFG.DISTILLER = CN()
CFG.DISTILLER.TYPE = "NONE"  # distiller registry name (see mdistiller.distillers); NONE = the student alone
CFG.DISTILLER.TEACHER = "ResNet50"  # teacher model registry name, or timm:<name> / torchvision:<name>; a list = an ensemble
CFG.DISTILLER.STUDENT = "resnet32"  # student model registry name, or timm:<name> / torchvision:<name>
CFG.DISTILLER.TEACHER_CKPT = ""  # teacher checkpoint; empty = mdistiller's download_ckpts location; a list: one per teacher
CFG.DISTILLER.TEACHER_WEIGHTS = []  # several teachers: weights of their logits in the mean (normalised to sum 1); [] = equal
CFG.DISTILLER.TEACHER_PRETRAINED = False  # timm:/torchvision: teachers: the library's pretrained weights, no TEACHER_CKPT
CFG.DISTILLER.TEACHER_INPUT_SIZE = 0  # resize the teacher's views to this side on the device; 0 = the dataset's size
CFG.DISTILLER.EXTRA = []  # further distillers (registry names) whose losses are added
CFG.DISTILLER.LOGIT_STAND = False  # logit standardization (Sun et al., CVPR 2024) before the temperature
CFG.DISTILLER.VIEWS = 0  # augmented views: 0 = the method's reference number, 1 = weak, 2 = weak + strong

# ---------------------------------------------------------------------------------------
# Solver
# ---------------------------------------------------------------------------------------
CFG.SOLVER = CN()
CFG.SOLVER.TRAINER = "base"  # "dot"/"crd_dot" = DOT (mdistiller/solver/dot.py); other values: the views follow the distiller
CFG.SOLVER.DOT = CN()
CFG.SOLVER.DOT.DELTA = 0.075  # DOT: task momentum MOMENTUM - DELTA, distillation momentum MOMENTUM + DELTA
CFG.SOLVER.BATCH_SIZE = 64  # global training batch size (split across ranks)
CFG.SOLVER.EPOCHS = 240  # number of training epochs (numbered from 1)
CFG.SOLVER.LR = 0.05  # initial learning rate
CFG.SOLVER.LR_DECAY_STAGES = [150, 180, 210]  # epochs after which the lr is multiplied by LR_DECAY_RATE
CFG.SOLVER.LR_DECAY_RATE = 0.1  # step-schedule factor
CFG.SOLVER.WEIGHT_DECAY = 0.0001  # SGD weight decay
CFG.SOLVER.MOMENTUM = 0.9  # SGD momentum
CFG.SOLVER.TYPE = "SGD"  # optimizer registry name: SGD (the reference's), AdamW, Adam, RMSprop (mdistiller.solver.optimizer)
CFG.SOLVER.BETAS = [0.9, 0.999]  # Adam/AdamW betas (torch's defaults)
CFG.SOLVER.EPS = 1e-8  # Adam/AdamW/RMSprop eps (torch's default)
CFG.SOLVER.WEIGHT_DECAY_NORM_BIAS = True  # False: no weight decay on 1-D parameters (norms, biases) and timm's no_weight_decay()
CFG.SOLVER.SCHEDULER = "step"  # lr schedule: step (LR_DECAY_STAGES, per epoch; multistep = step), cosine, linear (per step)
CFG.SOLVER.WARMUP_EPOCHS = 0.0  # per-step linear warmup from WARMUP_LR to LR over this many epochs (any scheduler)
CFG.SOLVER.WARMUP_LR = 0.0  # learning rate of the warmup's first step
CFG.SOLVER.MIN_LR = 0.0  # where cosine and linear end
CFG.SOLVER.LABEL_SMOOTHING = 0.0  # label smoothing of every method's cross-entropy term (0 = off, the reference)
CFG.SOLVER.CLIP_GRAD = 0.0  # clip the gradients' global norm to this value (0 = off)
CFG.SOLVER.EMA = 0.0  # decay of an exponential moving average of the student, saved as student_ema (0 = off)
CFG.SOLVER.EMA_SELECT = False  # select the reported epoch on the EMA's accuracy (ema_val_acc with a holdout)
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
CFG.LOG.LEVEL = "INFO"  # messages printed by the package: DEBUG, INFO, WARNING or ERROR (--quiet: ERROR)
