module palisade.invalid/tests/tools/report

go 1.24.0
