"""Files through the gateway: a key sees, reads and deletes only the files it uploaded."""

from __future__ import annotations

from pathlib import Path

import pytest

from kimiflow import Kimi
from kimiflow.core.errors import NotFoundError
from tests.gateway.conftest import RunningGateway


def test_a_key_sees_only_its_own_files(gateway: RunningGateway, tmp_path: Path) -> None:
    document = tmp_path / "工单.txt"
    document.write_text("客户说: 订单 42 没有到。", encoding="utf-8")
    a_key, b_key = gateway.create_key("crm"), gateway.create_key("tickets")
    with Kimi(api_key=a_key, base_url=gateway.base_url, max_retries=0) as a, \
            Kimi(api_key=b_key, base_url=gateway.base_url, max_retries=0) as b:
        uploaded = a.files.upload(document)
        b_own = b.files.upload(document)
        assert [f.id for f in a.files.list().data] == [uploaded.id]
        assert [f.id for f in b.files.list().data] == [b_own.id]
        assert "订单 42" in a.files.content(uploaded.id)
        assert a.files.retrieve(uploaded.id).id == uploaded.id
        for attempt in (lambda: b.files.retrieve(uploaded.id), lambda: b.files.content(uploaded.id),
                        lambda: b.files.delete(uploaded.id)):
            with pytest.raises(NotFoundError):
                attempt()
        assert a.files.delete(uploaded.id).deleted
        assert a.files.list().data == []
        assert [f.id for f in b.files.list().data] == [b_own.id]
