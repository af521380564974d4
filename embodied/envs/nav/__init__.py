"""Navigation tasks, one module each: `pointnav`, `objectnav`, `vln`, `objectrecall` (its
tour and questions in `tour`), over the shared `env.NavEnv`; `episodes` (VLN-CE files),
`metrics` (VLN-CE definitions), `language` (instruction templates), `geometry`."""
