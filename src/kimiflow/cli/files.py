"""``kimiflow files``: the files API (docs/kimi-api.md §7.4) — upload, list, content, rm — and the
file-extract flow ``kimiflow chat -f`` uses."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from kimiflow import Kimi

PURPOSES = ("file-extract", "image", "video", "batch")


def extract_text(client: Kimi, path: str) -> str:
    """Upload ``path`` for extraction, return the text Kimi extracted, and delete the upload.

    The upload is deleted because the text is all a chat needs and an account holds at most
    1,000 files (docs/kimi-api.md §7.4).

    >>> extract_text(client, "report.pdf")[:40]
    """
    uploaded = client.files.upload(path, purpose="file-extract")
    try:
        return client.files.content(uploaded.id)
    finally:
        client.files.delete(uploaded.id)


@click.group(name="files")
def files() -> None:
    """Upload, list, read and delete files on your Kimi account.

    Example: kimiflow files upload report.pdf && kimiflow files content FILE_ID
    """


@files.command(name="upload")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--purpose", type=click.Choice(PURPOSES), default="file-extract", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the file object as JSON.")
def upload(path: str, purpose: str, as_json: bool) -> None:
    """Upload a file (up to 100 MB; 1,000 files per account)."""
    from kimiflow.cli.connect import open_client
    from kimiflow.cli.output import echo_json

    with open_client() as client:
        uploaded = client.files.upload(path, purpose=purpose)
    if as_json:
        echo_json(uploaded.to_dict())
    else:
        click.echo(uploaded.id)
        click.echo(f"Uploaded {uploaded.filename} ({uploaded.bytes} bytes, {uploaded.status or 'ok'}).", err=True)


@files.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="Print the file objects as JSON.")
def list_files(as_json: bool) -> None:
    """List the files on the account."""
    from kimiflow.cli.connect import open_client
    from kimiflow.cli.output import echo_json, print_table

    with open_client() as client:
        listed = client.files.list()
    if as_json:
        echo_json([f.to_dict() for f in listed.data])
        return
    rows = [
        [f.id, f.filename, f.bytes, f.purpose, f.status, time.strftime("%Y-%m-%d %H:%M", time.localtime(f.created_at))]
        for f in listed.data
    ]
    print_table("Files", ["id", "filename", "bytes", "purpose", "status", "created"], rows)


@files.command(name="content")
@click.argument("file_id")
def content(file_id: str) -> None:
    """Print the text extracted from a file-extract upload."""
    from kimiflow.cli.connect import open_client

    with open_client() as client:
        text = client.files.content(file_id)
    click.echo(text)


@files.command(name="rm")
@click.argument("file_ids", nargs=-1, required=True, metavar="FILE_ID...")
def remove(file_ids: tuple[str, ...]) -> None:
    """Delete files."""
    from kimiflow.cli.connect import open_client

    with open_client() as client:
        for file_id in file_ids:
            client.files.delete(file_id)
            click.echo(f"Deleted {file_id}.", err=True)
