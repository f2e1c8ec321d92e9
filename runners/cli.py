"""From parsed command-line flags and the validated config to one typed job, then run it.

This is the only module that reads argparse values or looks config keys up for a job; every check happens here,
before any output is touched. Nothing but ``main.py`` imports it.
"""
from __future__ import annotations

import os

from pathlib import Path

from .config import get, load_config
from .errors import ArgumentError, ConfigError, MissingFileError, OutputError, UserError
from .files import check_output_file, check_output_folder
from .grid_files import check_grid_for, is_grid_file, read_grid_file
from .jobs import (OBJECTIVES, AblateJob, FidJob, FidSpec, SampleJob, Sampling, StatsJob, TrainJob, TuneJob,
                   TuneSolverJob)
from .solver_files import check_solver_for, is_solver_file, read_solver_file
from .setup import (apply_threads, image_shape, model_spec, nonnegative, pick, positive, resolve_device,
                    resolve_plan, schedule_of, sha256_file)


def user_errors() -> tuple:
    """The exceptions main.py prints as one line (exit 2); everything else is a bug and keeps its traceback.
    FloatingPointError is what the samplers raise for a network that returns NaN or inf (the step and timestep
    named), wherever a command runs one (a sampled cell, ablate's reference solve, a teacher)."""
    from models import CheckpointError

    return (UserError, CheckpointError, FloatingPointError)


def _given(args, cfg: dict, flag: str, key: str, default=None):
    """(value, name): the flag's value when given, else the config key's (``Section.key``) or ``default``; the
    name an error should use — the flag, ``--set Section.key``, or the key and its file — so that a bad value is
    blamed on what the user typed or wrote."""
    value = getattr(args, flag.lstrip("-").replace("-", "_"))
    if value is not None:
        return value, flag
    section, name = key.split(".", 1)
    overridden = any(o.split("=", 1)[0].strip() == key for o in getattr(args, "overrides", None) or ())
    return get(cfg, section, name, default), f"--set {key}" if overridden else f"{key} in {args.config}"


def _uses_ema(cfg: dict) -> bool:
    """Whether the job samples a checkpoint's EMA weights (Model.ema, DDIM's switch; true by default)."""
    return get(cfg, "Model", "ema", True) is not False


def _split(text, name: str, cast=str) -> list:
    try:
        values = [cast(v.strip()) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise ArgumentError(f"{name} {text!r}: expected a comma-separated list of {cast.__name__}s") from None
    if not values:
        raise ArgumentError(f"{name} {text!r} names nothing")
    return values


def _check_model(cfg: dict) -> None:
    """Build the config's network on the meta device (no memory, no arithmetic) and run it on one image of the
    config's shape: a bad Model section, an image size the network cannot take, or an output that is not ε-shaped
    is a config error here, not a traceback after the job has started."""
    import torch

    from models import build_model

    shape = image_shape(cfg)
    if cfg.get("Model", {}).get("embedding_type") == "fourier":
        # score-SDE's Fourier-embedding networks take σ (the VE SDE); every job here feeds VP timestep labels
        raise ConfigError("Model.embedding_type: fourier networks take σ of the VE SDE, but the samplers and the "
                          "trainer here drive VP networks with timestep labels; use embedding_type: positional")
    try:
        with torch.device("meta"):
            out = build_model(cfg)(torch.empty(1, *shape), torch.zeros(1))
    except (ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"Model: {e}") from None
    except RuntimeError as e:
        raise ConfigError(f"Model: the network cannot run on {shape[0]}×{shape[1]}×{shape[2]} images "
                          f"({str(e).splitlines()[0]})") from None
    if tuple(out.shape[1:]) != shape:
        raise ConfigError(f"Model: the network returns {tuple(out.shape[1:])} for {shape} images; ε must have the "
                          f"input's shape (check out_ch / out_channels against in_channels)")


def _fid_spec(cfg: dict, args) -> FidSpec:
    from .features import EXTRACTORS, extractor_weights
    from .fid import check_compatible, load_stats

    stats, source = _given(args, cfg, "--stats", "FID.stats")
    if stats is None:
        get(cfg, "FID", "stats", required=True)  # the config error naming the missing key
    if source != "--stats" and not Path(stats).exists():
        raise MissingFileError(f"statistics file not found: {stats} ({source})")
    reference = load_stats(stats)
    name = get(cfg, "FID", "extractor", "inception")
    weights = extractor_weights(name, pick(args.inception_weights, get(cfg, "FID", "extractor_weights")))
    check_compatible(reference, EXTRACTORS[name])
    return FidSpec(stats_path=str(stats), stats_sha256=sha256_file(stats), reference=reference, extractor=name,
                   extractor_weights=weights, extractor_sha256=sha256_file(weights))


def _sampling(method: str, steps, convention: str, schedule, eta=None, explicit_steps: bool = False) -> Sampling:
    from samplers import get_method

    try:
        adaptive = get_method(method).adaptive
    except ValueError as e:
        raise ArgumentError(str(e)) from None
    if adaptive and explicit_steps:
        raise ArgumentError(f"{method} is adaptive: it takes no --steps")
    if not adaptive and steps is None:
        raise ArgumentError(f"{method} needs --steps (or Sample.steps)")
    p = resolve_plan(method, schedule, None if adaptive else steps, convention, eta)
    return Sampling(p.method.name, None if adaptive else steps, convention, eta, p.nfe)


def _tuned_sampling(grid, method: str, convention: str, schedule, eta=None) -> Sampling:
    """A sampler setting that runs ``method`` on a tuned grid file's timesteps instead of its own grid."""
    if "@" in method:
        raise ArgumentError(f"a tuned grid replaces the method's own grid: give {method.split('@')[0]!r}, not "
                            f"{method!r}")
    try:
        p = resolve_plan(method, schedule, None, convention, eta, timesteps=grid.timesteps)
    except ArgumentError as e:
        raise ArgumentError(f"grid file {grid.path}: {e}") from None
    return Sampling(p.method.name, len(grid.timesteps) - 1, convention, eta, p.nfe, tuple(grid.timesteps),
                    file=str(Path(grid.path).resolve()))


def _learned_sampling(solver_file, convention: str, schedule, eta=None) -> Sampling:
    """A sampler setting that runs a learned solver file's solver (its own grid and coefficients)."""
    try:
        p = resolve_plan(solver_file.solver, schedule, None, convention, eta)
    except ArgumentError as e:
        raise ArgumentError(f"solver file {solver_file.path}: {e}") from None
    from samplers.learned import BASE

    solver = solver_file.solver
    return Sampling(BASE, solver.nfe, convention, None, p.nfe, solver.timesteps, solver,
                    file=str(Path(solver_file.path).resolve()))


def _model(args, cfg: dict):
    _check_model(cfg)
    return model_spec(cfg, *_given(args, cfg, "--ckpt", "Model.ckpt"), args.trust_checkpoint,
                      pick(args.precision, get(cfg, "Sample", "precision", "fp32")),
                      bool(args.compile or get(cfg, "Sample", "compile", False)))


def _convention(args, cfg: dict) -> str:
    from samplers import CONVENTIONS

    convention = str(pick(args.convention, get(cfg, "Sample", "convention", "standard"))).lower()
    if convention not in CONVENTIONS:
        raise ArgumentError(f"unknown convention {convention!r}; choose one of {', '.join(CONVENTIONS)}")
    return convention


def _shape_or_rgb(cfg: dict) -> tuple:
    """The config's image shape; a config without Model and Dataset sections scores RGB images of any size."""
    return image_shape(cfg) if cfg.get("Model") or cfg.get("Dataset") else (3, None, None)


def sample_job(args) -> SampleJob:
    cfg = load_config(args.config, args.overrides)
    schedule = schedule_of(cfg)
    eta = pick(args.eta, get(cfg, "Sample", "eta"))  # the manifest's effective config records a --eta run's η
    grid_path = pick(args.timesteps_file, get(cfg, "Sample", "timesteps_file"))
    solver_path = pick(args.solver_file, get(cfg, "Sample", "solver_file"))
    if grid_path is not None and solver_path is not None:
        raise ArgumentError("a tuned grid (--timesteps-file / Sample.timesteps_file) and a learned solver "
                            "(--solver-file / Sample.solver_file) both given; a learned solver brings its own grid "
                            "(switch the config's off with --set Sample.timesteps_file=null)")
    if solver_path is not None:
        solver_file = read_solver_file(solver_path)
        for flag, value in (("--steps", args.steps), ("--method", args.method)):
            if value is not None:
                raise ArgumentError(f"{flag} and a learned solver (--solver-file / Sample.solver_file) both given; "
                                    f"the solver sets the method and its steps")
        sampling = _learned_sampling(solver_file, _convention(args, cfg), schedule, eta)
        model = _model(args, cfg)
        check_solver_for(solver_file, model.checkpoint_sha256, cfg.get("Schedule", {}), _uses_ema(cfg), args.force)
    elif grid_path is None:
        method = pick(args.method, get(cfg, "Sample", "method"))
        if method is None:
            raise ArgumentError("no method: pass --method or set Sample.method")
        sampling = _sampling(method, pick(args.steps, get(cfg, "Sample", "steps")), _convention(args, cfg),
                             schedule, eta, explicit_steps=args.steps is not None)
        model = _model(args, cfg)
    else:
        grid = read_grid_file(grid_path)
        if args.steps is not None:
            raise ArgumentError("--steps and a tuned grid (--timesteps-file / Sample.timesteps_file) both given; "
                                "the grid sets the steps")
        method = pick(args.method, grid.method)  # the grid's method unless the user names one
        sampling = _tuned_sampling(grid, method, _convention(args, cfg), schedule, eta)
        model = _model(args, cfg)
        check_grid_for(grid, method, model.checkpoint_sha256, cfg.get("Schedule", {}), _uses_ema(cfg), args.force)
    job = SampleJob(
        config=cfg, out=check_output_folder(args.out), sampling=sampling, schedule=schedule,
        model=model, seed=nonnegative(*_given(args, cfg, "--seed", "Sample.seed", 0)[::-1]),
        num_samples=positive(*_given(args, cfg, "--num-samples", "Sample.total_num")[::-1]),
        batch_size=positive(*_given(args, cfg, "--batch-size", "Sample.batch_size", 64)[::-1]),
        image_shape=image_shape(cfg), device=_device(args),
        fid=_fid_spec(cfg, args) if args.fid else None)
    for flag, value in (("--stats", args.stats), ("--inception-weights", args.inception_weights)):
        if value is not None and not args.fid:  # a flag that would change nothing is a mistake
            raise ArgumentError(f"{flag} is for the FID: add --fid")
    if job.fid is not None and job.num_samples < 2:
        raise ArgumentError(f"--fid needs at least 2 samples, got --num-samples {job.num_samples}")
    return job


def fid_job(args) -> FidJob:
    cfg = load_config(args.config, args.overrides)
    folder = Path(args.samples)
    if not args.samples.strip() or not folder.is_dir():
        raise UserError(f"samples folder not found: {folder}")
    return FidJob(samples=folder, fid=_fid_spec(cfg, args),
                  image_shape=_shape_or_rgb(cfg), device=_device(args))


def stats_job(args) -> StatsJob:
    from .features import extractor_weights

    cfg = load_config(args.config, args.overrides)
    source = Path(args.source) if args.source is not None else None
    if args.source is not None and not args.source.strip():
        raise UserError("--source is empty; name an image folder")
    if source is not None and not source.is_dir():
        raise UserError(f"--source folder not found: {source}")
    if source is not None and args.split is not None:
        raise ArgumentError("--split names a split of the config's dataset; with --source the images are the folder's")
    if source is not None and args.batch_size is not None:
        raise ArgumentError("--batch-size is the dataset loader's batch; with --source the folder's files are read "
                            "one feature chunk at a time")
    name = get(cfg, "FID", "extractor", "inception")
    return StatsJob(out=check_replaceable_output(args.out, "statistics"), extractor=name,
                    extractor_weights=extractor_weights(name, pick(args.inception_weights,
                                                             get(cfg, "FID", "extractor_weights"))),
                    batch_size=positive(*_given(args, cfg, "--batch-size", "FID.batch_size", 200)[::-1]),
                    image_shape=_shape_or_rgb(cfg), source=source, dataset=dict(cfg.get("Dataset", {})),
                    split=pick(args.split, get(cfg, "Dataset", "split", "train")), device=_device(args))


def _file_list(flag_value, flag: str, cfg: dict, key: str) -> list:
    """ablate's grid or solver files: the flag's comma-separated paths, else the config's Sample.<key> (one path;
    null or absent: none) — the config key must not be ignored where ``sample`` honours it."""
    if flag_value is not None:
        return _split(flag_value, flag)
    path = get(cfg, "Sample", key)
    return [path] if path else []


def ablate_job(args) -> AblateJob:
    if args.seed is not None:  # sample's flag; ablate's seeds are a list, and --seed was silently ignored
        raise ArgumentError("ablate takes --seeds (comma-separated, default FID.seeds), not --seed")
    cfg = load_config(args.config, args.overrides)
    schedule = schedule_of(cfg)
    convention = _convention(args, cfg)
    methods = _split(*_given(args, cfg, "--methods", "FID.methods", "DDIM,S-PNDM,F-PNDM"))
    steps_list = _split(*_given(args, cfg, "--steps", "FID.steps", "10,20,50"), int)
    seeds_text, seeds_name = _given(args, cfg, "--seeds", "FID.seeds", "0")
    seeds = [nonnegative(seeds_name, s) for s in _split(seeds_text, seeds_name, int)]
    cells = []
    for method in methods:
        for steps in steps_list:
            cell = _sampling(method, steps, convention, schedule)
            if cell not in cells:  # an adaptive method is one cell whatever the steps
                cells.append(cell)
    model = _model(args, cfg)
    for path in _file_list(args.timesteps_file, "--timesteps-file", cfg, "timesteps_file"):
        grid = read_grid_file(path)
        check_grid_for(grid, grid.method, model.checkpoint_sha256, cfg.get("Schedule", {}), _uses_ema(cfg), args.force)
        cell = _tuned_sampling(grid, grid.method, convention, schedule)
        twin = next((c for c in cells if (c.label, c.steps) == (cell.label, cell.steps)), None)
        if twin is not None and twin != cell:
            raise ArgumentError(f"two tuned grids for {cell.method} with {cell.steps} steps; give one per method "
                                f"and step count")
        if twin is None:
            cells.append(cell)
    for path in _file_list(args.solver_file, "--solver-file", cfg, "solver_file"):
        solver_file = read_solver_file(path)
        check_solver_for(solver_file, model.checkpoint_sha256, cfg.get("Schedule", {}), _uses_ema(cfg), args.force)
        cell = _learned_sampling(solver_file, convention, schedule)
        twin = next((c for c in cells if (c.label, c.steps) == (cell.label, cell.steps)), None)
        if twin is not None and twin != cell:
            raise ArgumentError(f"two learned solvers with {cell.steps} evaluations; give one per NFE")
        if twin is None:
            cells.append(cell)
    num = pick(args.num_samples, get(cfg, "FID", "num_samples"))
    if num is None:
        raise ArgumentError("no sample count: pass --num-samples or set FID.num_samples")
    if num < 2:
        raise ArgumentError(f"--num-samples must be at least 2 for a FID, got {num}")
    return AblateJob(
        config=cfg, out=check_output_folder(args.out), cells=tuple(cells), seeds=tuple(dict.fromkeys(seeds)),
        schedule=schedule, model=model, fid=_fid_spec(cfg, args),
        num_samples=positive("--num-samples", num),
        batch_size=positive(*_given(args, cfg, "--batch-size", "Sample.batch_size", 64)[::-1]),
        reference_samples=positive(*_given(args, cfg, "--reference-samples", "FID.reference_samples", 64)[::-1]),
        image_shape=image_shape(cfg), device=_device(args),
        noise_floor_split=get(cfg, "Dataset", "split", "train") if get(cfg, "FID", "noise_floor") else None)


def check_replaceable_output(out, kind: str) -> Path:
    """The --out of tune-grid (``kind`` "grid"), tune-solver ("solver") or stats ("statistics"): a new file or an
    earlier file of that kind; anything else (a config, a checkpoint named by mistake) is refused rather than
    overwritten."""
    from .fid import is_stats_file

    is_kind, example = {"grid": (is_grid_file, "grid.json"), "solver": (is_solver_file, "solver.json"),
                        "statistics": (is_stats_file, "stats.npz")}[kind]
    path = check_output_file(out, example=example)
    if path.exists() and not is_kind(path):
        raise OutputError(f"--out {path} exists and is not a {kind} file; refusing to overwrite it (choose another "
                          f"name or remove it)")
    return path


def _standard_convention(cfg: dict, command: str) -> None:
    """The learning commands tune for the standard convention (ā read at t, the last step to ā = 1); a config
    that samples in the released code's convention would use the result under another ā than it was fitted to."""
    convention = str(get(cfg, "Sample", "convention", "standard")).lower()
    if convention != "standard":
        raise ArgumentError(f"{command} learns for the standard convention, but the config's Sample.convention is "
                            f"{convention!r} (set --set Sample.convention=standard)")


def tune_job(args) -> TuneJob:
    from samplers import get_method

    cfg = load_config(args.config, args.overrides)
    schedule = schedule_of(cfg)
    method = pick(args.method, get(cfg, "Sample", "method"))
    if method is None:
        raise ArgumentError("no method: pass --method or set Sample.method")
    from samplers.tuning import LOSSES, check_free_points, check_last, held_out_count, steps_for_nfe, tunable_method

    nfe = positive("--nfe", args.nfe)
    if args.objective not in OBJECTIVES:
        raise ArgumentError(f"--objective must be one of {', '.join(OBJECTIVES)}, got {args.objective!r}")
    fid = args.objective == "fid"
    for flag, value, needs in (("--evaluations", args.evaluations, "fid"),
                               ("--iterations", args.iterations, "teacher"), ("--loss", args.loss, "teacher"),
                               ("--stats", args.stats, "fid"), ("--inception-weights", args.inception_weights, "fid")):
        if value is not None and args.objective != needs:  # a flag that would change nothing is a mistake
            raise ArgumentError(f"{flag} is for --objective {needs}, not {args.objective}")
    loss = pick(args.loss, "log")
    if loss not in LOSSES:
        raise ArgumentError(f"--loss must be one of {', '.join(LOSSES)}, got {loss!r}")
    _standard_convention(cfg, "tune-grid")
    try:
        check_last(args.last, schedule.T)
    except ValueError as e:
        raise ArgumentError(f"--{e}") from None
    try:
        base, _ = tunable_method(method)
        check_free_points(base, steps_for_nfe(base, nfe, schedule.T), bool(args.learn_first), args.last)
        m = get_method(method)
    except ValueError as e:
        raise ArgumentError(str(e)) from None
    _check_model(cfg)
    # fp32 and eager whatever Sample.precision/compile say: the tuning differentiates through the network
    model = model_spec(cfg, *_given(args, cfg, "--ckpt", "Model.ckpt"), args.trust_checkpoint, "fp32", False)
    num_samples = positive("--num-samples", pick(args.num_samples, 2000 if fid else 256))
    if not fid:  # before the progress bar opens, not inside the library
        try:
            held_out_count(num_samples)
        except ValueError as e:
            raise ArgumentError(f"--num-samples {num_samples}: {e}") from None
    eval_samples = positive("--eval-samples", pick(args.eval_samples, 2000 if fid else 128))
    if fid and eval_samples < 2:  # before the search, not after it
        raise ArgumentError(f"--objective fid needs --eval-samples of at least 2 for a FID, got {eval_samples}")
    return TuneJob(config=cfg, out=check_replaceable_output(args.out, "grid"), method=m.name, nfe=nfe,
                   schedule=schedule, model=model, num_samples=num_samples,
                   eval_samples=eval_samples,
                   seed=nonnegative("--seed", args.seed),
                   iterations=None if args.iterations is None else positive("--iterations", args.iterations),
                   batch_size=positive(*_given(args, cfg, "--batch-size", "Sample.batch_size", 64)[::-1]),
                   image_shape=image_shape(cfg), device=_device(args), loss=loss,
                   learn_first=bool(args.learn_first), last=args.last, objective=args.objective,
                   evaluations=None if args.evaluations is None else nonnegative("--evaluations", args.evaluations),
                   fid=_fid_spec(cfg, args) if fid else None)


def tune_solver_job(args) -> TuneSolverJob:
    from samplers import available, get_method
    from samplers.learned import BASE
    from samplers.tuning import held_out_count, steps_for_nfe, tunable_method

    from .tune import largest_steps

    cfg = load_config(args.config, args.overrides)
    schedule = schedule_of(cfg)
    nfe = positive("--nfe", args.nfe)
    _standard_convention(cfg, "tune-solver")
    try:
        steps_for_nfe(get_method(BASE), nfe, schedule.T)
        given = (_split(args.compare, "--compare") if args.compare is not None else
                 [n for n in available() if "@" not in n and not get_method(n).adaptive and not get_method(n).eta])
        compare = tuple(dict.fromkeys(tunable_method(m)[0].name for m in given))
    except ValueError as e:
        raise ArgumentError(str(e)) from None
    # checked before learning: the comparison runs after it, and a method without one step in the NFE left it
    # with nothing to compare (a traceback that lost the whole run)
    unfit = [m for m in compare if largest_steps(m, nfe, schedule.T) == 0]
    if args.compare is not None and unfit:
        needs = ", ".join(f"{m} needs {get_method(m).nfe(1)}" for m in unfit)
        raise ArgumentError(f"--compare: not one step of {', '.join(unfit)} fits in NFE {nfe} ({needs})")
    compare = tuple(m for m in compare if m not in unfit)
    history = positive("--history", args.history)
    if history < 2:
        raise ArgumentError(f"--history must be at least 2, got {history}")
    num_samples = positive("--num-samples", args.num_samples)
    holdout = positive("--holdout", args.holdout)
    if not 2 <= holdout <= num_samples - 2:
        raise ArgumentError(f"--holdout {holdout} must leave at least 2 of the --num-samples {num_samples} noises "
                            f"on each side")
    try:  # the grid the solver starts from is tuned on the same noises, split by tune_timesteps' own rule
        held_out_count(num_samples)
    except ValueError as e:
        raise ArgumentError(f"--num-samples {num_samples}: {e}") from None
    _check_model(cfg)
    # fp32 and eager whatever Sample.precision/compile say: the learning differentiates through the network
    model = model_spec(cfg, *_given(args, cfg, "--ckpt", "Model.ckpt"), args.trust_checkpoint, "fp32", False)
    return TuneSolverJob(config=cfg, out=check_replaceable_output(args.out, "solver"), nfe=nfe, schedule=schedule,
                         model=model,
                         num_samples=num_samples, eval_samples=positive("--eval-samples", args.eval_samples),
                         seed=nonnegative("--seed", args.seed), iterations=nonnegative("--iterations", args.iterations),
                         batch_size=positive(*_given(args, cfg, "--batch-size", "Sample.batch_size", 64)[::-1]),
                         image_shape=image_shape(cfg), compare=compare, device=_device(args),
                         affine=bool(args.affine), history=history, holdout=holdout)


def train_job(args) -> TrainJob:
    from .training import resolve_settings

    cfg = load_config(args.config, args.overrides)
    _check_model(cfg)
    return TrainJob(config=cfg, settings=resolve_settings(cfg, args.max_steps),
                    workdir=check_output_folder(args.workdir, "--workdir"), resume=bool(args.resume),
                    device=_device(args))


# commands whose output is learned: their default thread count ignores the load (setup.apply_threads)
LEARNING_COMMANDS = ("tune-grid", "tune-solver")
# the commands that split their work over torchrun's processes; the others would each do all of it and race for
# one output file
DISTRIBUTED_COMMANDS = ("sample", "ablate", "train")


def _device(args):
    return str(resolve_device(args.device)) if args.device else None


def run(args) -> None:
    """Build the command's job (every check), then run it."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and args.command not in DISTRIBUTED_COMMANDS:
        raise ArgumentError(f"{args.command} runs in one process; start it with python, not torchrun (only "
                            f"{', '.join(DISTRIBUTED_COMMANDS)} use several)")
    apply_threads(args.threads, follow_load=args.command not in LEARNING_COMMANDS)
    if args.command == "sample":
        from .sampling import run_sample_job

        run_sample_job(sample_job(args))
    elif args.command == "fid":
        from .evaluate import run_fid_job

        run_fid_job(fid_job(args))
    elif args.command == "stats":
        from .evaluate import run_stats_job

        run_stats_job(stats_job(args))
    elif args.command == "ablate":
        from .ablate import run_ablation

        run_ablation(ablate_job(args))
    elif args.command == "tune-grid":
        from .tune import run_tune_job

        run_tune_job(tune_job(args))
    elif args.command == "tune-solver":
        from .tune_solver import run_tune_solver_job

        run_tune_solver_job(tune_solver_job(args))
    elif args.command == "train":
        from .training import run_training

        run_training(train_job(args))
    else:
        raise AssertionError(args.command)


def interrupted_hint(args) -> str:
    """What to do after Ctrl-C, true to what is on disk."""
    if args.command == "tune-grid":
        return "no grid file was written; rerun the same command to tune again"
    if args.command == "tune-solver":
        return "no solver file was written; rerun the same command to learn it again"
    if args.command != "train":
        return "rerun the same command to continue where it stopped"
    from .training import LAST

    if (Path(args.workdir) / "checkpoints" / LAST).is_file():
        return "add --resume to the same command to continue from its last checkpoint"
    return "no checkpoint was written yet: rerun the same command to start again"
