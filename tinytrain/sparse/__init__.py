"""TinyTrain's online machinery: fisher (Eq. 2 + potential), selection (Eq. 3, greedy layers, top-K
channels), engine (memory-real sparse training), accounting (bytes the engine keeps), reference (masked)."""
