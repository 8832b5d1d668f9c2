"""The catalog and the users: what the page's pickers list, and the items' own images."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.responses import FileResponse

from serving.deps import AUTH_ERRORS, ERR, get_service, require
from serving.schemas import ItemOut, UserOut
from serving.security import Caller
from serving.service import Service

router = APIRouter(tags=["catalog"])


@router.get("/v1/items", response_model=list[ItemOut], responses=AUTH_ERRORS)
async def items(limit: int = Query(50, ge=1, le=1000), category: str | None = Query(None, max_length=128),
                _: Caller = Depends(require("generate")), svc: Service = Depends(get_service)) -> list[ItemOut]:
    df = (svc.items if category is None else svc.items.filter(svc.items["category"] == category)).head(limit)
    titles = df["title"] if "title" in df.columns else [None] * df.height
    return [ItemOut(item_id=i, category=c, title=t, image_url=f"/v1/items/{i}/image")
            for i, c, t in zip(df["item_id"], df["category"], titles, strict=True)]


@router.get("/v1/items/{item_id}/image", response_class=FileResponse,
            responses={404: {"description": "unknown item", **ERR}})
async def item_image(item_id: str, svc: Service = Depends(get_service)):
    """A catalog item's image: public, as a shop's product photos are."""
    path = svc.item_image(item_id)
    if path is None or not path.is_file():
        raise HTTPException(404, f"unknown item {item_id!r}")
    return FileResponse(path)


@router.get("/v1/users", response_model=list[UserOut], responses=AUTH_ERRORS)
async def users(limit: int = Query(50, ge=1, le=1000), _: Caller = Depends(require("report")),
                svc: Service = Depends(get_service)) -> list[UserOut]:
    """The users with the most logged events (a report: who exists is not public)."""
    top = svc.users.head(limit)
    return [UserOut(user_id=u, events=int(c)) for u, c in zip(top["user_id"], top["len"], strict=True)]
