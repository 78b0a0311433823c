"""Region proposal network layers: anchors, anchor targets, proposals, proposal targets."""
