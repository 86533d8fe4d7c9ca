module palisade.invalid/tests/tools/pause

go 1.24.0
