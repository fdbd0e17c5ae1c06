public enum PlunkdVersion { public static let string = "0.1.0" }
