"""Operations: Prometheus metrics (``metrics``) and log lines (``logs``). Depends on no other part of videosynth,
so every layer may report through it."""
