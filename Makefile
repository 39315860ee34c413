# The README's two commands: `make demo` and `make test`. Both create .venv on first use
# (Python 3.11+, a C compiler for the Cython extension, and the package registry).

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
CONTEXT := examples/expressions/context.json
FLOWS   := examples/flows
# Demo-only secret values; real deployments set FLOWLANG_SECRET_* from their vault.
DEMO_SECRETS := FLOWLANG_SECRET_CRM_TOKEN=demo-crm-token FLOWLANG_SECRET_BILLING_TOKEN=demo-billing-token \
	FLOWLANG_SECRET_CALENDAR_KEY=demo-calendar-key FLOWLANG_SECRET_CRM_BASIC=demo-crm-basic \
	FLOWLANG_SECRET_SMS_KEY_ID=demo-sms-id FLOWLANG_SECRET_SMS_KEY_SECRET=demo-sms-secret \
	FLOWLANG_SECRET_SLACK_TOKEN=demo-slack-token FLOWLANG_SECRET_SPEECH_API_KEY=demo-speech-key

.PHONY: schema setup demo demo-expressions demo-automations test test-compiled test-python dist-check bench bench-f2 bench-documents bench-tests bench-growth bench-http bench-serve bench-serve-events bench-automations bench-automate-memory fuzz lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml setup.py ext/_expr.pyx ext/_runtime.pyx ext/flowlang._expr.pxd
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e . --group test --group bench --group dev
	touch $(STAMP)

# Run the account-verification call flow offline: recorded HTTP responses, the caller's digits.
demo: $(STAMP)
	$(DEMO_SECRETS) $(BIN)/flowlang run $(FLOWS)/account_verification.yaml \
		--context $(FLOWS)/data/account_verification.context.json \
		--responses $(FLOWS)/data/account_verification.responses.yaml --input ask_account=12345678#

# Process the example event stream with the example workflows, offline. A fresh store each
# time, so the demo shows the same run every time (a kept store would make every event a
# duplicate). One example event carries bad data on purpose, so the run ends with a dead letter
# and exit status 1 ("the work found problems"): the demo expects exactly that.
demo-automations: $(STAMP)
	rm -rf .venv/demo.db .venv/demo.db-wal .venv/demo.db-shm .venv/demo.db.owners
	$(DEMO_SECRETS) $(BIN)/flowlang automate examples/workflows/*.yaml \
		--events examples/workflows/data/events.jsonl --responses examples/workflows/data/responses.yaml \
		--store .venv/demo.db; \
		status=$$?; [ $$status -eq 1 ] && echo "(exit status 1: a dead letter was written, as this demo intends)"; \
		[ $$status -le 1 ]

# Evaluate the example templates against the example context, one per line.
demo-expressions: $(STAMP)
	@echo "flowlang $$($(BIN)/python -c 'import flowlang; print(flowlang.__version__, "backend:", flowlang.BACKEND)')"
	@while IFS= read -r template; do \
		printf '%s\n    => ' "$$template"; \
		$(BIN)/flowlang eval "$$template" --context $(CONTEXT) || exit 1; \
	done < examples/expressions/templates.txt

# The whole suite twice: with the compiled evaluator required, then in pure-Python mode.
# pytest's exit status 5 (no tests collected) is not a failure of the run itself.
test: test-compiled test-python

test-compiled: $(STAMP)
	FLOWLANG_REQUIRE_EXTENSIONS=1 $(BIN)/python -m pytest; status=$$?; [ $$status -eq 0 ] || [ $$status -eq 5 ]

test-python: $(STAMP)
	FLOWLANG_NO_EXTENSIONS=1 $(BIN)/python -m pytest; status=$$?; [ $$status -eq 0 ] || [ $$status -eq 5 ]

# Build the sdist and, from it, the wheel (`python -m build`, isolated: needs the package
# registry), then install each in a fresh venv outside the checkout and smoke-test it there
# (commands, the compiled core, a flow run offline). CI runs it after `make test`.
DIST_DIR := $(VENV)/dist

dist-check: $(STAMP)
	rm -rf $(DIST_DIR)
	$(BIN)/python .ci/dist_check.py $(DIST_DIR)

# Benchmarks (outside the default test run): ratios against a hand-written baseline and peers.
bench: $(STAMP)
	mkdir -p .benchmarks
	FLOWLANG_REQUIRE_EXTENSIONS=1 $(BIN)/python -m pytest benchmarks/test_expressions.py benchmarks/test_flows.py \
		benchmarks/test_automations.py --benchmark-only \
		--benchmark-columns=median,iqr,ops --benchmark-sort=name --benchmark-group-by=group -q \
		--benchmark-json=.benchmarks/latest.json
	$(BIN)/python benchmarks/report.py
	$(MAKE) --no-print-directory bench-documents
	$(MAKE) --no-print-directory bench-tests
	$(MAKE) --no-print-directory bench-growth
	$(MAKE) --no-print-directory bench-http
	$(MAKE) --no-print-directory bench-serve
	$(MAKE) --no-print-directory bench-automations

# F2 alone (the 20-step flow on the compiled loop, with its trace read, and all in Python),
# against the hand-written baseline in one run: the README's F2 rows.
# Write the shipped JSON Schemas of flows and workflows again (after adding or changing a step
# or action kind).
schema: $(STAMP)
	$(BIN)/python -c "from flowlang.flow.schema import write_schema; write_schema()"
	$(BIN)/python -c "from flowlang.automations.schema import write_schema; write_schema()"

bench-f2: $(STAMP)
	mkdir -p .benchmarks
	FLOWLANG_REQUIRE_EXTENSIONS=1 $(BIN)/python -m pytest benchmarks/test_flows.py -k test_interpreter \
		--benchmark-only --benchmark-columns=median,iqr,ops --benchmark-sort=name -q \
		--benchmark-json=.benchmarks/f2.json
	$(BIN)/python benchmarks/report.py .benchmarks/f2.json

# Loading and checking documents as they grow (time and peak memory; the README's curve).
bench-documents: $(STAMP)
	FLOWLANG_REQUIRE_EXTENSIONS=1 $(BIN)/python -m pytest benchmarks/test_documents.py \
		--benchmark-only -q -s

# Growth curves (benchmarks/growth.py): time per size over two to three orders of magnitude,
# with the local exponent (1 is linear), for every cost that could grow faster than the work.
bench-growth: $(STAMP)
	FLOWLANG_REQUIRE_EXTENSIONS=1 $(BIN)/python -m pytest benchmarks/test_growth_*.py \
		--benchmark-only -q -s -p no:cacheprovider

# Requests per second to a loopback HTTPS server (its own process) at 10 to 2,000 concurrent
# runs: GuardedHttp.send and a flow through Runtime against a minimal asyncio+ssl+h11 client.
bench-http: $(STAMP)
	FLOWLANG_REQUIRE_EXTENSIONS=1 $(BIN)/python -m pytest benchmarks/test_http_throughput.py \
		--benchmark-only -q -s -p no:cacheprovider

# flowlang serve (its own process, as the command runs it) against a bare Starlette route on the
# same uvicorn: Gather round trips per second, p50/p99 at 200 concurrent calls, in-process store
# and Redis (a redis-server started on a free port), and Redis memory per waiting call.
bench-serve: $(STAMP)
	FLOWLANG_REQUIRE_EXTENSIONS=1 FLOWLANG_REQUIRE_SERVICES=1 $(BIN)/python -m pytest \
		benchmarks/test_serve.py --benchmark-only -q -s -p no:cacheprovider

# flowlang serve's POST /events accepted per second, with its events store and without, one
# process and --workers 2 (a redis-server started on a free port for the workers' calls).
bench-serve-events: $(STAMP)
	FLOWLANG_REQUIRE_EXTENSIONS=1 $(BIN)/python benchmarks/serve_events.py

# Automations' deliveries per second to a loopback HTTPS receiver (its own process, counting
# Idempotency-Keys): the local executor against a plain asyncio + httpx script at 10 and 100
# events at once; one and two `flowlang worker` processes and a killed worker's redelivery on
# Redis and RabbitMQ (skipped while the worker command does not exist).
bench-automations: $(STAMP)
	FLOWLANG_REQUIRE_EXTENSIONS=1 FLOWLANG_REQUIRE_SERVICES=1 $(BIN)/python -m pytest \
		benchmarks/test_automations_throughput.py --benchmark-only -q -s -p no:cacheprovider

# flowlang automate on 1,000,000 events (offline, recorded responses) with its local store:
# resident memory at 100k, 500k and 1M events, events per second, the store's size (~15 min).
bench-automate-memory: $(STAMP)
	FLOWLANG_REQUIRE_EXTENSIONS=1 $(BIN)/python benchmarks/automate_memory.py $(AUTOMATE_EVENTS)

# `flowlang test` of 1,000 cases on each step loop (cases per second: the README's figures).
bench-tests: $(STAMP)
	FLOWLANG_REQUIRE_EXTENSIONS=1 $(BIN)/python -m pytest benchmarks/test_flow_tests.py \
		--benchmark-only -q -s -p no:cacheprovider

# Coverage-guided fuzzing (atheris, the `fuzz` extra) of the scanner and parser, the document
# loader and the compiled evaluator against its Python twin: FUZZ_SECONDS each (default 60).
# Seeds come from tests/golden and the example documents; the corpus grows in .venv/fuzz/corpus
# and an input that breaks the contract is saved in .venv/fuzz/findings (rerun a harness with
# that file as its argument to reproduce it).
FUZZ_SECONDS ?= 60
FUZZ_DIR     := $(VENV)/fuzz
FUZZ_STAMP   := $(VENV)/.fuzz-installed

$(FUZZ_STAMP): $(STAMP) pyproject.toml
	$(BIN)/python -m pip install --quiet --group fuzz
	touch $(FUZZ_STAMP)

fuzz: $(FUZZ_STAMP)
	rm -rf $(FUZZ_DIR)/seed
	$(BIN)/python tests/fuzz/common.py $(FUZZ_DIR)/seed
	for target in parser documents evaluator; do \
		dict=expressions; [ $$target = documents ] && dict=documents; \
		mkdir -p $(FUZZ_DIR)/corpus/$$target $(FUZZ_DIR)/findings; \
		echo "== fuzz_$$target ($(FUZZ_SECONDS) s)"; \
		FLOWLANG_REQUIRE_EXTENSIONS=1 $(BIN)/python tests/fuzz/fuzz_$$target.py \
			-max_total_time=$(FUZZ_SECONDS) -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
			-dict=tests/fuzz/$$dict.dict -artifact_prefix=$(FUZZ_DIR)/findings/$$target- \
			$(FUZZ_DIR)/corpus/$$target $(FUZZ_DIR)/seed/$$target || exit 1; \
	done

lint: $(STAMP)
	$(BIN)/ruff check flowlang tests benchmarks setup.py .ci/dist_check.py
	$(BIN)/mypy

clean:
	rm -rf $(VENV) build dist *.egg-info flowlang/*.so ext/*.c ext/*.html .pytest_cache .mypy_cache .ruff_cache .hypothesis .benchmarks
