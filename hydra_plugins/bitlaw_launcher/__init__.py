"""bitlaw's Hydra launcher plugin: `hydra/launcher=local` and `hydra/launcher=slurm` of this project.

Hydra 1.3 finds plugins only in modules of the top-level `hydra_plugins` namespace package, so this one
package lives outside sweep/ (docs/architecture.md §1). It is a thin Hydra-facing shell: the schemas and
the Launcher classes; what a launch does is sweep/launcher.py.
"""
