"""A crate of envs written in Rust, loaded by pufferrs: importing this
package registers ``Catch-v0`` with gymnasium, so that
``pufferrs train pufferrs_game:Catch-v0`` trains it."""

import pufferrs.native
from pufferrs_game import _envs

#: The ids this package registers.
ENV_IDS = pufferrs.native.register(_envs)
