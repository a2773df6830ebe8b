"""Reading the app's ratings (and catalog) from Supabase: over REST or straight from Postgres.

``table`` holds what both readers share (settings, validation, errors); ``rest`` and
``postgres`` are the two readers, both :class:`RatingsReader`.
"""

from __future__ import annotations

from cfrec_assets.defs.supabase_io.postgres import SupabasePostgresResource
from cfrec_assets.defs.supabase_io.rest import SupabaseResource
from cfrec_assets.defs.supabase_io.table import RatingsReader, SupabaseReadError

__all__ = ["RatingsReader", "SupabasePostgresResource", "SupabaseReadError", "SupabaseResource"]
