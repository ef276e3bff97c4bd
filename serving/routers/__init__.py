"""One router per resource; each is built by a function from the app's ``Services`` (no globals)."""

from serving.routers.admin import admin_router
from serving.routers.banners import banners_router
from serving.routers.feedback import feedback_router
from serving.routers.ops import ops_router

__all__ = ["admin_router", "banners_router", "feedback_router", "ops_router"]
