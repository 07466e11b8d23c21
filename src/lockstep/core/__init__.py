"""The ground floor: small facts and helpers every layer may use.

Nothing here imports the rest of lockstep, and nothing here loads Dask or the
build tooling, so the runtime inside an image can use all of it.
"""
