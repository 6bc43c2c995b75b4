"""Hydra launchers of mmssm-lightning (found by Hydra's plugin discovery in the ``hydra_plugins``
namespace): each sweep job in fresh processes, its ranks started by Lightning, never the sweep."""
