"""The storage seam: where result videos live and how clients get a link to them."""
