# Everything runs in .venv/, created on first use and re-installed when pyproject.toml or
# uv-overrides.txt change. `make help` lists the targets.
#   make test    ruff, then the default test suite (no `slow`, no `gpu` tests)
#   make demo    synthetic corpus -> shards -> stage 1 -> stage 2 -> dub -> benchmark, all in outputs/demo/

SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
PYTEST_ARGS ?=

# The install stamp is named after the content of the install inputs, not their times: a fresh clone
# (new file times) reuses a cached venv, and any edit re-installs. .ci/run keys its venv cache on it.
INSTALL_INPUTS := pyproject.toml uv-overrides.txt
INSTALL_HASH := $(shell cat $(INSTALL_INPUTS) | sha256sum | cut -c1-16)
STAMP := $(VENV)/.installed-$(INSTALL_HASH)

.PHONY: help install test lint browser demo demo-shards demo-real demo-real-lmd stage1-scale rehearse calibrate-landmarks clean distclean \
	install-hash

help:
	@echo "make install   create .venv/ and install the project (editable) with its dev extras"
	@echo "make test      lint, then run the default test suite (PYTEST_ARGS='-m slow' for the slow tests)"
	@echo "make lint      ruff over the whole tree (configured in pyproject.toml)"
	@echo "make demo      synthetic corpus -> shards -> both stages -> dub -> benchmark, in outputs/demo/"
	@echo "make demo-real real faces and speech (../shared/data): shards (a real-face landmark calibration), render_real,"
	@echo "               the U-Net baseline, eval.reconstruct, geometry_real (phones), eval.lipsync, a dub of a val person,"
	@echo "               in outputs/demo/real/ (~95 min)"
	@echo "make demo-real-lmd  after demo-real: LMD of self-dubs of five val people against a frozen mouth (~35 min)"
	@echo "make browser   install Debian's chromium for the browser tests (as root; make test runs it)"
	@echo "make stage1-scale  stage 1's acceptance at the data scale it needs (1920 clips, ~55 min), outputs/stage1_scale/"
	@echo "make rehearse  the paper recipe at its real sizes with stand-ins (BFM, HuBERT-base, VGG; random weights):"
	@echo "               shards, both stages a few steps + a resume, a dub, eval.benchmark --split hdtf, planning"
	@echo "               figures in outputs/rehearse/figures.md (~34 min on 2 cores)"
	@echo "make calibrate-landmarks  re-make the procedural model's MediaPipe landmark calibration (after changing the model)"
	@echo "make clean     remove caches, build metadata and outputs/demo/ (keeps .venv/ and runs)"
	@echo "make distclean clean, and remove .venv/"

install: $(STAMP)

# uv's --compile-bytecode matters here: this environment sets PYTHONDONTWRITEBYTECODE, and without .pyc
# files every process (test, DDP rank, data worker) takes twice as long to import torch and friends.
$(STAMP):
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@test -x $(UV) || $(PY) -m pip install --quiet --disable-pip-version-check "uv>=0.5"
	$(UV) pip install --python $(PY) --compile-bytecode --override uv-overrides.txt -e '.[dev]'
	@rm -f $(VENV)/.installed-*
	@touch $@

install-hash:
	@echo $(INSTALL_HASH)

lint: install
	$(VENV)/bin/ruff check .

# Debian's chromium for the browser tests (tests/test_browser.py, Playwright drives it): installed when missing and
# apt-get can run (root); otherwise those tests skip and say why
browser:
	@command -v chromium >/dev/null 2>&1 || { if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		(apt-get install -y --no-install-recommends chromium >/dev/null 2>&1 || \
		 { apt-get update >/dev/null 2>&1 && apt-get install -y --no-install-recommends chromium >/dev/null 2>&1; }) \
		|| echo "make browser: could not install chromium; the browser tests will skip" >&2; \
	else echo "make browser: chromium missing (apt-get install chromium as root); the browser tests will skip" >&2; fi; }

test: install lint browser
	rc=0; $(PY) -m pytest $(PYTEST_ARGS) || rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; fi; exit $$rc

# The demo, end to end on the CPU: a synthetic corpus (120 speakers x 4 clips; the speaker split gives 77 train,
# 23 val, 20 test) -> shards -> stage 1 -> stage 2 -> a dub of a held-out speaker's video with another speaker's
# audio -> our own evaluators (SyncNet, style encoder) trained on the shards -> the synthetic benchmark table with
# its GT row. 22 to 37 minutes on 2 cores (README).
# Every step skips or resumes what is done. Sizes can be overridden, e.g.
# `make demo DEMO_SPEAKERS=8 GEOMETRY_STEPS=100 RENDER_STEPS=100` for a quick look.
DEMO := outputs/demo
DEMO_SPEAKERS ?= 120
GEOMETRY_STEPS ?= 1200
RENDER_STEPS ?= 600
SYNCNET_STEPS ?= 200
STYLE_STEPS ?= 200
BENCHMARK_VIDEOS ?= 6

# the demo's synthetic corpus and its shards (make demo-real trains stage 1 on them too)
demo-shards: install
	$(PY) -m data_prep.synthetic --out $(DEMO)/corpus --speakers $(DEMO_SPEAKERS) --clips-per-speaker 4 \
		--seconds 4 --seed 0 --workers 2 --preview $(DEMO)/preview.png
	$(PY) -m data_prep.synthetic.check $(DEMO)/corpus --every 8 2>/dev/null
	$(PY) -m data_prep.build --source synthetic --root $(DEMO)/corpus --out $(DEMO)/shards --workers 2 \
		--val 0.2 --test 0.2

demo: demo-shards
	$(PY) -m src.train experiment=geometry_demo data.root=$(DEMO)/shards trainer.max_steps=$(GEOMETRY_STEPS) ckpt_path=last \
		hydra.run.dir=$(DEMO)/geometry
	$(PY) -m src.train experiment=render_demo data.root=$(DEMO)/shards trainer.max_steps=$(RENDER_STEPS) ckpt_path=last \
		hydra.run.dir=$(DEMO)/render
	eval "set -- $$($(PY) -m data_prep.demo_pair $(DEMO)/shards)"; \
	$(PY) -m src.dub --video "$$1" --audio "$$2" --out $(DEMO)/dub.mp4 \
		--geometry-ckpt $(DEMO)/geometry/checkpoints/last.ckpt --render-ckpt $(DEMO)/render/checkpoints/last.ckpt \
		--cache-dir $(DEMO)/dub_cache
	test -f $(DEMO)/evaluators/syncnet.ckpt || $(PY) -m eval.train_syncnet --shards $(DEMO)/shards \
		--out $(DEMO)/evaluators/syncnet.ckpt --steps $(SYNCNET_STEPS)
	test -f $(DEMO)/evaluators/style_encoder.ckpt || $(PY) -m eval.train_style_encoder --shards $(DEMO)/shards \
		--out $(DEMO)/evaluators/style_encoder.ckpt --steps $(STYLE_STEPS) --speakers-per-batch 8
	$(PY) -m eval.benchmark --split synthetic --shards $(DEMO)/shards --generate --allow-missing \
		--max-videos $(BENCHMARK_VIDEOS) --out $(DEMO)/benchmark
	@echo "demo corpus: $(DEMO)/corpus/ (preview $(DEMO)/preview.png)"
	@echo "shards:      $(DEMO)/shards/"
	@echo "stage 1:     $(DEMO)/geometry/ (checkpoints/last.ckpt, csv/metrics.csv)"
	@echo "stage 2:     $(DEMO)/render/ (checkpoints/last.ckpt; side-by-side samples/step_*.png: face ref | lip refs | target PNCC | nearest ref | prediction | truth)"
	@echo "dub:         $(DEMO)/dub.mp4 (demo weights, trained for minutes: see the warning above)"
	@echo "benchmark:   $(DEMO)/benchmark/benchmark.md (.csv, .json)"

# Real faces and real speech (needs the shared test material, REAL_DATA and REAL_AUDIO; never committed, never
# published): shards of the 73 real clips with their person labels (train / val people disjoint; clips without
# speech kept for stage 2), fitted with the packaged landmark calibration -> its real-face refinement measured on
# the train people (data_prep.calibrate_real; skipped once made) -> the shards again, fitted with it (REAL/shards)
# -> experiment=render_real (128 px) and the Wav2Lip-style U-Net baseline on the same data
# and budget -> eval.reconstruct on the val people against both and the nearest-reference copy, with contact
# sheets (references REAL_WINDOW frames or more away from the target, and with only the target left out) ->
# experiment=geometry_real (the phone front end) on the real train people -> eval.lipsync on the val
# people -> a dub of a val person (REAL_VIDEO) with another person's speech (REAL_SPEECH) and its contact sheet.
# Every step resumes or skips what is done. Times measured on 2 cores: README, "Real faces and real speech".
REAL := $(DEMO)/real
REAL_DATA ?= ../shared/data/real
REAL_AUDIO ?= ../shared/data/audio
REAL_RENDER_STEPS ?= 1000
REAL_GEOMETRY_STEPS ?= 300
# frames on each side of the target left out of the references (render_real's data.exclude_window)
REAL_WINDOW ?= 12
# the renderer's attention temperature at inference (src.dub / eval.reconstruct --attention-temperature): below 1 each
# pixel copies from fewer reference pixels, a sharper mouth; render_real is also scored at 1 for comparison
REAL_TEMPERATURE ?= 0.25
# a dub with both real checkpoints (demo-real's dub of REAL_VIDEO, demo-real-lmd's self-dubs), its fit with the
# real-face landmark calibration the real shards were fitted with (data_prep.calibrate_real)
REAL_DUB = $(PY) -m src.dub --geometry-ckpt $(REAL)/geometry/checkpoints/last.ckpt \
	--render-ckpt $(REAL)/render/checkpoints/last.ckpt --attention-temperature $(REAL_TEMPERATURE) \
	--landmark-calibration $(REAL)/landmark_calibration.npy --cache-dir $(REAL)/dub_cache
REAL_VIDEO ?= $(REAL_DATA)/OpenTalker__SadTalker__RD_Radio34_000.mp4
REAL_SPEECH ?= $(REAL_AUDIO)/OpenTalker__SadTalker__RD_Radio31_000.wav

demo-real: install
	@test -f $(REAL_DATA)/MANIFEST.tsv || { echo "make demo-real: $(REAL_DATA)/MANIFEST.tsv not found: the real clips \
	live outside the repository (set REAL_DATA=DIR)"; exit 2; }
	$(PY) -m data_prep.build --source folder --root $(REAL_DATA) --labels $(REAL_DATA)/MANIFEST.tsv --allow-no-audio \
		--out $(REAL)/shards_packaged_calibration --workers 2
	test -f $(REAL)/landmark_calibration.npy || $(PY) -m data_prep.calibrate_real \
		--shards $(REAL)/shards_packaged_calibration --split train --out $(REAL)/landmark_calibration.npy
	$(PY) -m data_prep.build --source folder --root $(REAL_DATA) --labels $(REAL_DATA)/MANIFEST.tsv --allow-no-audio \
		--landmark-calibration $(REAL)/landmark_calibration.npy --out $(REAL)/shards --workers 2
	$(PY) -m src.train experiment=render_real data.root=$(REAL)/shards trainer.max_steps=$(REAL_RENDER_STEPS) \
		ckpt_path=last hydra.run.dir=$(REAL)/render
	$(PY) -m src.train experiment=render_unet_baseline data.root=$(REAL)/shards trainer.max_steps=$(REAL_RENDER_STEPS) \
		ckpt_path=last hydra.run.dir=$(REAL)/unet
	$(PY) -m eval.reconstruct --render-ckpt render_real=$(REAL)/render/checkpoints/last.ckpt \
		--render-ckpt render_real_t1=$(REAL)/render/checkpoints/last.ckpt \
		--attention-temperature render_real=$(REAL_TEMPERATURE) --attention-temperature render_real_t1=1 \
		--render-ckpt unet=$(REAL)/unet/checkpoints/last.ckpt --shards $(REAL)/shards --split val \
		--exclude-window $(REAL_WINDOW) --out $(REAL)/reconstruct
	$(PY) -m eval.reconstruct --render-ckpt render_real=$(REAL)/render/checkpoints/last.ckpt \
		--render-ckpt render_real_t1=$(REAL)/render/checkpoints/last.ckpt \
		--attention-temperature render_real=$(REAL_TEMPERATURE) --attention-temperature render_real_t1=1 \
		--render-ckpt unet=$(REAL)/unet/checkpoints/last.ckpt --shards $(REAL)/shards --split val \
		--exclude-window 0 --out $(REAL)/reconstruct_target_only
	$(PY) -m eval.reconstruct --render-ckpt render_real=$(REAL)/render/checkpoints/last.ckpt \
		--attention-temperature render_real=$(REAL_TEMPERATURE) --render-ckpt unet=$(REAL)/unet/checkpoints/last.ckpt \
		--shards $(REAL)/shards --split val --exclude-window $(REAL_WINDOW) --composite --out $(REAL)/reconstruct_composite
	$(PY) -m src.train experiment=geometry_real data.root=$(REAL)/shards trainer.max_steps=$(REAL_GEOMETRY_STEPS) \
		ckpt_path=last hydra.run.dir=$(REAL)/geometry
	$(PY) -m eval.lipsync --geometry-ckpt phones=$(REAL)/geometry/checkpoints/last.ckpt \
		$$(test -f $(DEMO)/geometry/checkpoints/last.ckpt && echo --geometry-ckpt hubert_synthetic=$(DEMO)/geometry/checkpoints/last.ckpt) \
		--shards $(REAL)/shards --split val --out $(REAL)/lipsync \
		$$(for f in $(REAL_AUDIO)/*chinese* $(REAL_AUDIO)/*deyu* $(REAL_AUDIO)/*japanese* $(REAL_AUDIO)/*spanish* \
			$(REAL_AUDIO)/*korean* $(REAL_AUDIO)/*common_voice_fr* $(REAL_AUDIO)/*LJ001-0001*; do \
			test -f $$f && echo --speech $$f; done) \
		$$(test -f $(REAL_AUDIO)/coqui-ai__TTS__LJ001-0001.wav && echo --silence $(REAL_AUDIO)/coqui-ai__TTS__LJ001-0001.wav)
	$(REAL_DUB) --video $(REAL_VIDEO) --audio $(REAL_SPEECH) --out $(REAL)/dub.mp4
	$(PY) -m eval.contact_sheet --video $(REAL)/dub.mp4 --input $(REAL_VIDEO) --out $(REAL)/dub_sheet.png
	$(PY) -m eval.upper_face --input $(REAL_VIDEO) --dubbed $(REAL)/dub.mp4 --json $(REAL)/upper_face.json
	@echo "real shards:     $(REAL)/shards/ (index.json: what the quality filter removed), fitted with the landmark"
	@echo "                 calibration refined on the train people: $(REAL)/landmark_calibration.npy (.json: per pass)"
	@echo "stage 2 (real):  $(REAL)/render/checkpoints/last.ckpt (samples/: held-out people)"
	@echo "U-Net baseline:  $(REAL)/unet/checkpoints/last.ckpt"
	@echo "reconstruction:  $(REAL)/reconstruct/reconstruct.md (.csv, .json; sheets/: one contact sheet per clip);"
	@echo "                 as a dub shows it (pasted into the truth): $(REAL)/reconstruct_composite/reconstruct.md"
	@echo "stage 1 (real):  $(REAL)/geometry/checkpoints/last.ckpt; lip sync: $(REAL)/lipsync/lipsync.md"
	@echo "dub:             $(REAL)/dub.mp4 and $(REAL)/dub_sheet.png (a real person: keep it local, never publish it)"

# Lip sync on dubbed video (issue 15's LMD), after make demo-real: self-dubs of val people (each clip driven by its own
# audio) with both real checkpoints, and the same dubs with the mouth frozen at the reference's mean expression
# (src.dub --freeze-mouth), scored by eval.benchmark on their first REAL_LMD_FRAMES frames (MediaPipe mouth landmarks
# against the input: LMD; SSIM, PSNR, dlib CSIM). About 35 minutes on 2 cores for the five clips (~1900 dubbed frames).
REAL_LMD_CLIPS ?= rizkiarm__LipNet__GRID_lbbc2a.mpg OpenTalker__SadTalker__RD_Radio2_000.mp4 \
	filby89__spectre__MEAD_W040_level_3_happy_029.mp4 yerfor__MimicTalk__Trump_10s.mp4 \
	Hangz-nju-cuhk__Talking-Face_PC-AVS__Audio_Source_681100216.mp4
REAL_LMD_FRAMES ?= 100

demo-real-lmd: install
	@test -f $(REAL)/render/checkpoints/last.ckpt -a -f $(REAL)/geometry/checkpoints/last.ckpt || { echo "make \
	demo-real-lmd: run make demo-real first (it trains $(REAL)/render and $(REAL)/geometry)"; exit 2; }
	mkdir -p $(REAL)/lmd/gt $(REAL)/lmd/phones $(REAL)/lmd/frozen
	for f in $(REAL_LMD_CLIPS); do s=$${f%.*}; ln -sf $(abspath $(REAL_DATA))/$$f $(REAL)/lmd/gt/$$f; \
		test -f $(REAL)/lmd/phones/$$s.mp4 || $(REAL_DUB) --no-progress --video $(REAL_DATA)/$$f --audio $(REAL_DATA)/$$f \
			--out $(REAL)/lmd/phones/$$s.mp4 || exit 1; \
		test -f $(REAL)/lmd/frozen/$$s.mp4 || $(REAL_DUB) --no-progress --freeze-mouth --video $(REAL_DATA)/$$f --audio $(REAL_DATA)/$$f \
			--out $(REAL)/lmd/frozen/$$s.mp4 || exit 1; \
	done
	$(PY) -m eval.benchmark --split real_val --gt $(REAL)/lmd/gt --method phones=$(REAL)/lmd/phones \
		--method frozen=$(REAL)/lmd/frozen --metrics lmd ssim psnr csim_dlib --max-frames $(REAL_LMD_FRAMES) \
		--out $(REAL)/lmd/benchmark

# Stage 1 at the data scale its held-out target needs (lip vertex error at most half the mean-expression
# baseline on held-out speakers and clips): 480 speakers x 4 clips (speaker split 352 train / 56 val / 72 test),
# the demo recipe for 2000 steps, then the same without the style branch for the style metric. make demo's
# 480 clips give 0.54-0.58 of the baseline; this gave 0.48 / 0.46 / 0.48 (val / val_seen / test; no style
# 0.56 / 0.52 / 0.54). About 55 minutes on 2 cores (corpus 18, shards 18, the two runs 18); resumes like demo.
SCALE := outputs/stage1_scale
SCALE_SPEAKERS ?= 480
SCALE_STEPS ?= 2000

stage1-scale: install
	$(PY) -m data_prep.synthetic --out $(SCALE)/corpus --speakers $(SCALE_SPEAKERS) --clips-per-speaker 4 \
		--seconds 4 --seed 7 --workers 2
	$(PY) -m data_prep.build --source synthetic --root $(SCALE)/corpus --out $(SCALE)/shards --workers 2 \
		--val 0.15 --test 0.15
	$(PY) -m src.train experiment=geometry_demo data.root=$(SCALE)/shards trainer.max_steps=$(SCALE_STEPS) \
		ckpt_path=last hydra.run.dir=$(SCALE)/geometry
	$(PY) -m src.train experiment=geometry_demo data.root=$(SCALE)/shards trainer.max_steps=$(SCALE_STEPS) \
		model.net.style_encoder=null model.net.style_injection=null task_name=geometry_demo_no_style \
		ckpt_path=last hydra.run.dir=$(SCALE)/geometry_no_style
	@echo "stage 1 (style):    $(SCALE)/geometry/ (final metrics above; lve / lve_mean_expr is the ratio)"
	@echo "stage 1 (no style): $(SCALE)/geometry_no_style/ (compare style_amp_error with the style run's)"

# A rehearsal of a researcher's first run of the paper recipe at its real sizes (README, "Training at scale"), with
# stand-ins the project makes for what it cannot ship: a BFM_model_front.mat of the real size and layout (the
# procedural model densified to 35,709 vertices, data_prep/synthetic/bfm_standin.py), a HuBERT-base folder and the
# LPIPS VGG16 / AlexNet backbones with random weights, found by the configs at their default paths
# (paths.data_dir=$(REHEARSE_DATA)). Steps: shards of synthetic clips rendered with the stand-in BFM and of two
# real clips (REHEARSE_TRAIN_CLIP, REHEARSE_VAL_CLIP), fitted with it -> experiment=geometry_style (HuBERT-base,
# batch 16) and experiment=render_dual_attn (256 px, C = 128, N_f = N_l = 5, LPIPS-VGG, batch 4) for a few steps,
# each resumed once from last.ckpt -> the same at other batch sizes (peak memory against batch) -> a self-dub of
# the val clip's first second with both checkpoints -> eval.benchmark --split hdtf --allow-missing on it -> speed
# of data preparation and PNCC with the 35k-vertex model -> figures.md. Every step resumes or skips what is done.
# Only resources differ from the paper recipe: 2 data workers (2 cores), one validation and one test batch.
REHEARSE := $(CURDIR)/outputs/rehearse
REHEARSE_DATA := $(REHEARSE)/stand_ins
REHEARSE_BFM := $(REHEARSE_DATA)/BFM_model_front.mat
REHEARSE_TRAIN_CLIP ?= ../shared/data/video/OpenTalker__video-retalking__2.mp4
REHEARSE_VAL_CLIP ?= ../shared/data/video/OpenTalker__SadTalker__WDA_KatieHill_000.mp4
REHEARSE_DUB := $(lastword $(subst __, ,$(basename $(notdir $(REHEARSE_VAL_CLIP)))))
REHEARSE_TRAIN = paths.data_dir=$(REHEARSE_DATA) model.face_model=bfm:$(REHEARSE_BFM) data.num_workers=2 \
	"data.root=[$(REHEARSE)/shards/synthetic,$(REHEARSE)/shards/real]"
rehearse_run = hydra.run.dir=$(1) +callbacks.step_stats._target_=src.utils.step_stats.StepStats \
	+callbacks.step_stats.path=$(1)/step_stats.jsonl
# train-only runs at another batch size: three steps, no validation, no checkpoint
rehearse_sweep = $(REHEARSE_TRAIN) data.batch_size=$(2) trainer.max_steps=3 test=false +trainer.limit_val_batches=0 \
	optimized_metric=null \
	~callbacks.model_checkpoint $(call rehearse_run,$(REHEARSE)/sweep/$(1)_b$(2))
RENDER_LIMITS := +trainer.limit_val_batches=1 +trainer.limit_test_batches=1

rehearse: install
	@test -f $(REHEARSE_VAL_CLIP) || { echo "make rehearse: $(REHEARSE_VAL_CLIP) not found: the real clips live \
	outside the repository (set REHEARSE_TRAIN_CLIP=FILE REHEARSE_VAL_CLIP=FILE)"; exit 2; }
	$(PY) -m data_prep.synthetic.bfm_standin --out $(REHEARSE_BFM)
	$(PY) -m eval.rehearse stand-ins --out $(REHEARSE_DATA)
	$(PY) -m data_prep.synthetic --out $(REHEARSE)/corpus --face-model bfm:$(REHEARSE_BFM) --speakers 6 \
		--clips-per-speaker 1 --seconds 6 --seed 5 --workers 2
	$(PY) -m data_prep.build --source synthetic --root $(REHEARSE)/corpus --out $(REHEARSE)/shards/synthetic \
		--face-model bfm:$(REHEARSE_BFM) --workers 2 --val 0.2 --test 0.2
	$(PY) -m eval.rehearse real-clips --out $(REHEARSE)/real --train $(REHEARSE_TRAIN_CLIP) --val $(REHEARSE_VAL_CLIP) \
		--speech-seconds 1
	$(PY) -m data_prep.build --source folder --root $(REHEARSE)/real/clips --labels $(REHEARSE)/real/labels.tsv \
		--out $(REHEARSE)/shards/real --face-model bfm:$(REHEARSE_BFM) --workers 2
	test -f $(REHEARSE)/geometry/checkpoints/last.ckpt || $(PY) -m src.train experiment=geometry_style \
		$(REHEARSE_TRAIN) trainer.max_steps=3 test=false $(call rehearse_run,$(REHEARSE)/geometry)
	$(PY) -m src.train experiment=geometry_style $(REHEARSE_TRAIN) trainer.max_steps=5 ckpt_path=last \
		$(call rehearse_run,$(REHEARSE)/geometry)
	$(PY) -m eval.rehearse resumed --run $(REHEARSE)/geometry --steps 5
	test -f $(REHEARSE)/render/checkpoints/last.ckpt || $(PY) -m src.train experiment=render_dual_attn \
		$(REHEARSE_TRAIN) $(RENDER_LIMITS) trainer.max_steps=2 test=false $(call rehearse_run,$(REHEARSE)/render)
	$(PY) -m src.train experiment=render_dual_attn $(REHEARSE_TRAIN) $(RENDER_LIMITS) trainer.max_steps=3 \
		ckpt_path=last $(call rehearse_run,$(REHEARSE)/render)
	$(PY) -m eval.rehearse resumed --run $(REHEARSE)/render --steps 3
	for b in 4 8; do test -f $(REHEARSE)/sweep/geometry_b$$b/step_stats.jsonl || $(PY) -m src.train \
		experiment=geometry_style $(call rehearse_sweep,geometry,$$b) || exit 1; done
	for b in 1 2; do test -f $(REHEARSE)/sweep/render_b$$b/step_stats.jsonl || $(PY) -m src.train \
		experiment=render_dual_attn $(call rehearse_sweep,render,$$b) || exit 1; done
	test -f $(REHEARSE)/dubbed/$(REHEARSE_DUB).mp4 || $(PY) -m src.dub --video $(REHEARSE)/real/hdtf/$(REHEARSE_DUB).mp4 \
		--audio $(REHEARSE)/real/speech.wav --out $(REHEARSE)/dubbed/$(REHEARSE_DUB).mp4 --no-progress \
		--geometry-ckpt $(REHEARSE)/geometry/checkpoints/last.ckpt --render-ckpt $(REHEARSE)/render/checkpoints/last.ckpt \
		--cache-dir $(REHEARSE)/dub_cache 2>&1 | tee $(REHEARSE)/dub.log; test -f $(REHEARSE)/dubbed/$(REHEARSE_DUB).mp4
	$(PY) -m eval.benchmark --split hdtf --hdtf-root $(REHEARSE)/real/hdtf --test-list $(REHEARSE)/real/hdtf/test_list.txt \
		--method ours=$(REHEARSE)/dubbed --allow-missing --max-frames 25 --out $(REHEARSE)/benchmark
	test -f $(REHEARSE)/speed/raster.json || $(PY) -m eval.speed raster --face-model procedural bfm:$(REHEARSE_BFM) \
		--frames 100 --torch-frames 8 --json $(REHEARSE)/speed/raster.json
	for clip in $(REHEARSE_TRAIN_CLIP) $(REHEARSE_VAL_CLIP); do name=$$(basename $$clip .mp4); \
		test -f $(REHEARSE)/speed/data_prep_bfm_$$name.json || $(PY) -m eval.speed data_prep --video $$clip \
		--face-model bfm:$(REHEARSE_BFM) --json $(REHEARSE)/speed/data_prep_bfm_$$name.json || exit 1; done
	test -f $(REHEARSE)/speed/data_prep_procedural.json || $(PY) -m eval.speed data_prep --video $(REHEARSE_VAL_CLIP) \
		--face-model procedural --json $(REHEARSE)/speed/data_prep_procedural.json
	$(PY) -m eval.rehearse figures --root $(REHEARSE)

# The procedural face model's landmark calibration for MediaPipe (src/geometry/face_models/calibration/), made from a
# synthetic corpus of 100 speakers (seed 1000, apart from the test corpora's); re-run after changing the model.
calibrate-landmarks: install
	$(PY) -m data_prep.calibrate_landmarks --face-model procedural --speakers 100 --clips-per-speaker 1 --seconds 4 \
		--seed 1000 --ridge 0.001

clean:
	rm -rf outputs/demo outputs/rehearse .pytest_cache *.egg-info build
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
