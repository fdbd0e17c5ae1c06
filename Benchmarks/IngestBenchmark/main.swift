import PlunkdCore; print(PlunkdVersion.string)
