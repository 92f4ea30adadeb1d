"""Uploads streamed from the page in pieces, so neither the browser nor the server holds a whole file in one
websocket message: the page slices the File (`UPLOAD_JS`), the server writes each piece to disk as it arrives
and stops at the first piece past the limit (files.UploadStream). A piece is far below the websocket message
cap the session sets (session.MAX_MESSAGE_BYTES), which is what keeps a forged frame from allocating memory.
"""

from __future__ import annotations

import itertools
import logging

from DFM50NLib.errors import DFM50NError, InputError

log = logging.getLogger("DFM50N.web")

PIECE_BYTES = 1 << 20  # 1 MiB per websocket message

# window.dfm_stream_upload(file, trigger): {name, size} starts an upload (the server answers its id, or 0 when
# it refuses it), then {id, offset, data} per piece, then {id, done}; any refusal stops the loop at once.
# A piece travels as a DataView (msgpack binary, as trame sends a File's content): trame's argument decorators
# would turn a Uint8Array (it has a length) into an array of a million numbers.
UPLOAD_JS = f"""
window.dfm_stream_upload = async function (file, trigger) {{
  const id = await trame.trigger(trigger, [{{ name: file.name, size: file.size }}]);
  if (!id) return false;
  for (let offset = 0; offset < file.size; offset += {PIECE_BYTES}) {{
    const data = new DataView(await file.slice(offset, offset + {PIECE_BYTES}).arrayBuffer());
    if (!(await trame.trigger(trigger, [{{ id, offset, data }}]))) return false;
  }}
  return await trame.trigger(trigger, [{{ id, done: true }}]);
}};
"""


class UploadReceiver:
    """The server side of `dfm_stream_upload` for one kind of input (CT or lesion): `receive` takes each
    message; a finished file goes to `on_done(path, name)`. Errors go to `on_error(message)`, and the partial
    file is removed."""

    def __init__(self, folder, suffixes, on_done, on_error):
        self.folder, self.suffixes = folder, suffixes
        self.on_done, self.on_error = on_done, on_error
        self._streams = {}
        self._ids = itertools.count(1)

    def receive(self, message):
        stream_id = message.get("id") if isinstance(message, dict) else None
        try:
            if not isinstance(message, dict):
                raise InputError("The page sent an upload message the server does not know; reload the page.")
            if stream_id is None:
                return self._begin(message)
            stream = self._streams.get(stream_id)
            if stream is None:
                raise InputError("That upload was stopped on the server; choose the file again.")
            if message.get("done"):
                del self._streams[stream_id]
                try:
                    self.on_done(stream.finish(), stream.target.name)
                except BaseException:
                    stream.abort()  # a file the app could not open is not kept either
                    raise
            else:
                stream.write(int(message["offset"]), bytes(message["data"]))
            return True
        except DFM50NError as exc:
            self._drop(stream_id)
            self.on_error(str(exc))
        except Exception as exc:  # an unreadable upload must not take the session down
            log.exception("DFM50N web upload")
            self._drop(stream_id)
            self.on_error(f"{type(exc).__name__}: {exc}")
        return False

    def _begin(self, message):
        stream = self.folder.begin(str(message.get("name") or ""), int(message.get("size") or 0), self.suffixes)
        stream_id = next(self._ids)
        self._streams[stream_id] = stream
        return stream_id

    def _drop(self, stream_id):
        stream = self._streams.pop(stream_id, None)
        if stream is not None:
            stream.abort()
