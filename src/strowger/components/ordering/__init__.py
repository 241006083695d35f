"""Order management: TMF622/641/652 order and item state machines."""
