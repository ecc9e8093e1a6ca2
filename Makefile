.PHONY: run test lint bench install

install:
	python -m pip install -e '.[test]'

run:
	python -m pip install -q -e '.[embedded]' && serveplane dev

test:
	python -m pytest -q

lint:
	ruff check api db workers tests bench
	mypy api db workers

bench:
	python -m bench.run_all
