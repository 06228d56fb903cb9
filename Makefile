# The test environment: scripts/testimages.sh starts a Docker engine when none answers and
# builds the MySQL (MariaDB) and Redis images from Debian packages when they cannot be pulled;
# it prints the COMMERCEKIT_*_IMAGE exports the fixtures read.
SHELL := /bin/bash
export GOTOOLCHAIN := local
export TESTCONTAINERS_HOST_OVERRIDE ?= 127.0.0.1
export TESTCONTAINERS_RYUK_DISABLED ?= true
GOTEST := go test -race -count=1 -timeout 30m
IMAGES := eval "$$(bash scripts/testimages.sh)"

.PHONY: test smoke images run bench faultsale

## test: prepare the engine and images if needed, then run every test with the race detector,
## against sarama patched for IBM/sarama#2913 (scripts/sarama-patched.sh), with the test that
## reproduces that race (-tags sarama2913).
test:
	@$(IMAGES) && sarama=$$(bash scripts/sarama-patched.sh) && $(GOTEST) -tags sarama2913 $$sarama ./...

## smoke: the fixtures' round trips to MySQL, Redis and Kafka, verbosely.
smoke:
	@$(IMAGES) && $(GOTEST) -v -run 'TestFixtures|TestKafkaRoundTrip' ./internal/testenv

## bench: every performance figure of issue 16 beside its reference and the ratio, in one
## sitting, on loopback (starts Debian's MariaDB and Redis natively; see scripts/bench.sh).
bench:
	@bash scripts/bench.sh

## faultsale: the full-mode flash sale under a MariaDB stall, a MariaDB crash and a Redis
## that loses its data and restarts, each injected mid-race into servers the script starts
## for itself; fails unless every invariant holds (see scripts/faultsale.sh).
faultsale:
	@bash scripts/faultsale.sh

## images: only prepare the engine and images.
images:
	@bash scripts/testimages.sh >/dev/null
